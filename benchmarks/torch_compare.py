r"""SimCLR ResNet-18 train step: sslax (XLA:CPU, several XLA option sets) vs PyTorch eager.

  python benchmarks/torch_compare.py                        # 4 option sets, ~5 min on 2 quiet cores
  python benchmarks/torch_compare.py --variants all         # every option set tried (~12 min)
  python benchmarks/torch_compare.py --width 1.0 --steps 6 --repeats 2   # full-width ResNet-18

The same step on both sides, on one fixed random batch (input pipeline excluded): ResNet-18
with the small-image stem (3x3/1 conv, no pool), width multiplier --width, 2-layer projection
head (Linear-BN-ReLU-Linear, 512 -> 128), NT-Xent over the 2B views (temperature 0.2), SGD
with momentum 0.9 and weight decay, BatchNorm in training mode over all 2B crops, float32,
every core on both sides (torch.set_num_threads(os.cpu_count()); XLA's CPU thread pool is as
large by default). torch is only a benchmark dependency (`pip install -e .[bench]`).

Each XLA option set runs in its own process (XLA reads its flags once), and that process runs
the sslax step and the torch step alternately (order flipped every pair), so load from other
processes hits both alike. The speed ratio is the median over step pairs of torch time / sslax
time (>1: sslax faster). Writes benchmarks/results/torch_compare.{json,md}. Note: under heavy
CPU oversubscription PyTorch's OpenMP threads degrade more than XLA's pool, which flatters
sslax; quote ratios measured at a load average below the core count (recorded in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name -> extra XLA_FLAGS. Only flags jaxlib 0.10.2 accepts (an unknown flag aborts XLA).
VARIANTS = {
  "xla_default": "",
  "onednn": "--xla_cpu_use_onednn=true",
  "xnn_graph_greedy": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
  "xnn_fusion_dot_eltwise": "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
  "no_xnnpack": "--xla_cpu_use_xnnpack=false",
  "fast_math": "--xla_cpu_enable_fast_math=true",
  "onednn_custom_call": "--xla_cpu_experimental_onednn_custom_call=true",
  "onednn_fusion_dot_eltwise": "--xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce",
  "opt_preset_fast_runtime": "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME",
  "vector_width_512": "--xla_cpu_prefer_vector_width=512",
}


# ---------------------------------------------------------------------------------------------
# Workers (one process each)
# ---------------------------------------------------------------------------------------------


def build_jax_step(args):
  """-> (step() that runs one synchronous sslax train step, info dict)."""
  sys.path.insert(0, ROOT)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import jax
  import numpy as np
  from sslax import config as config_lib, perf, train
  from sslax import setup as setup_lib

  c = config_lib.base_config()
  c.method, c.seed = "simclr", 0
  c.dataset.name, c.dataset.image_size = "fake", args.image_size
  c.dataset.num_train_examples = args.batch
  c.batch_size, c.total_steps = args.batch, 1000
  c.model.depth, c.model.width, c.model.stem = 18, args.width, "small"
  c.simclr.temperature, c.simclr.proj_hidden_dim, c.simclr.proj_dim = 0.2, 512, 128
  c.optimizer.name, c.optimizer.base_lr, c.optimizer.lr_scaling = "sgd", 0.1, "none"
  c.optimizer.momentum, c.optimizer.weight_decay, c.optimizer.warmup_epochs = 0.9, 1e-4, 0.0
  c.eval.at_end = False
  s = setup_lib.build(c, devices=jax.devices()[:1])
  state = setup_lib.init_state(s)
  rng = np.random.default_rng(0)
  shape = (args.batch, args.image_size, args.image_size, 3)
  local = {
    "views": tuple(rng.random(shape, np.float32) for _ in range(2)),
    "label": np.zeros(args.batch, np.int32),
    "index": np.arange(args.batch, dtype=np.int32),
  }
  from sslax import sharding

  batch = sharding.make_global_batch(s.mesh, local)
  t0 = time.perf_counter()
  compiled = train.make_train_step(s).lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state}

  def step():
    holder["state"], metrics = compiled(holder["state"], batch)
    jax.block_until_ready(metrics)
    return metrics["loss"]

  return step, {
    "compile_s": compile_s,
    "flops": perf.step_flops(compiled),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def build_torch_step(args):
  """-> (step() that runs one PyTorch eager train step, info dict)."""
  import torch
  from torch import nn
  import torch.nn.functional as F

  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())

  def bn(c, zero=False):
    m = nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)  # torch momentum 0.1 == flax momentum 0.9
    if zero:
      nn.init.zeros_(m.weight)
    return m

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = bn(cout)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = bn(cout, zero=True)
      self.proj = None
      if stride != 1 or cin != cout:
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

    def forward(self, x):
      y = F.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return F.relu(y + (x if self.proj is None else self.proj(x)))

  class ResNet18Small(nn.Module):
    def __init__(self, width):
      super().__init__()
      base = max(int(64 * width), 1)
      self.stem = nn.Sequential(nn.Conv2d(3, base, 3, 1, 1, bias=False), bn(base), nn.ReLU())
      blocks, cin = [], base
      for stage in range(4):
        for i in range(2):
          cout = base * 2**stage
          blocks.append(Block(cin, cout, 2 if stage > 0 and i == 0 else 1))
          cin = cout
      self.blocks = nn.Sequential(*blocks)
      self.head = nn.Sequential(
        nn.Linear(cin, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 128)
      )

    def forward(self, x):
      return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))

  def nt_xent(z1, z2, temperature):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(-1e9)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    # SimCLR's loss_a + loss_b (as sslax.losses.nt_xent_loss): twice the mean over 2n anchors.
    return 2 * F.cross_entropy(logits, targets)

  model = ResNet18Small(args.width)
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  g = torch.Generator().manual_seed(0)
  shape = (args.batch, 3, args.image_size, args.image_size)
  v1, v2 = torch.rand(shape, generator=g), torch.rand(shape, generator=g)

  def step():
    opt.zero_grad(set_to_none=True)
    # One forward over both views: BatchNorm statistics over all 2B crops, as in sslax.
    z = model(torch.cat([v1, v2]))
    loss = nt_xent(z[: args.batch], z[args.batch :], 0.2)
    loss.backward()
    opt.step()
    return loss

  return step, {"torch": torch.__version__, "threads": torch.get_num_threads()}


def pair_worker(args) -> dict:
  """Both steps in one process, alternating, so background load hits both alike.

  The order flips every iteration (jax, torch, torch, jax, ...) so neither side always runs
  right after the other's thread pool went idle.
  """
  jax_step, jax_info = build_jax_step(args)
  torch_step, torch_info = build_torch_step(args)
  for _ in range(args.warmup):
    jax_step()
    torch_step()
  times = {"jax": [], "torch": []}
  cpu = {"jax": [], "torch": []}
  for i in range(args.steps):
    order = [("jax", jax_step), ("torch", torch_step)]
    for name, fn in order if i % 2 == 0 else order[::-1]:
      c0, t0 = _cpu_seconds(), time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
      cpu[name].append(_cpu_seconds() - c0)
  return {
    "jax_step_s": times["jax"],
    "torch_step_s": times["torch"],
    "jax_cpu_s": cpu["jax"],
    "torch_cpu_s": cpu["torch"],
    **jax_info,
    **torch_info,
  }


def _cpu_seconds() -> float:
  """CPU time of this process (all threads). Unlike wall time it barely moves when other
  processes load the machine, so it ranks XLA option sets on a busy machine."""
  import resource

  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def _run_worker(args, xla_flags: str) -> dict:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", SSLAX_NO_CPU_XLA_DEFAULTS="1")
  env["XLA_FLAGS"] = xla_flags
  env.pop("JAX_PLATFORMS", None)
  cmd = [
    sys.executable,
    os.path.abspath(__file__),
    "--worker",
    "--width",
    str(args.width),
    "--batch",
    str(args.batch),
    "--image_size",
    str(args.image_size),
    "--steps",
    str(args.steps),
    "--warmup",
    str(args.warmup),
  ]
  try:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.worker_timeout)
  except subprocess.TimeoutExpired:
    return {"error": f"worker ran past --worker_timeout={args.worker_timeout}s"}
  if out.returncode != 0:
    return {"error": " | ".join((out.stderr or out.stdout).strip().splitlines()[-2:])}
  return json.loads(out.stdout.strip().splitlines()[-1])


def _median(x):
  x = sorted(x)
  return x[len(x) // 2] if len(x) % 2 else 0.5 * (x[len(x) // 2 - 1] + x[len(x) // 2])


def write_markdown(result: dict, path: str) -> None:
  cfg = result["setup"]
  lines = [
    "# sslax vs PyTorch eager: SimCLR ResNet-18 train step on CPU",
    "",
    f"ResNet-18 small stem, width {cfg['width']}, batch {cfg['batch']} x 2 views of "
    f"{cfg['image_size']}px, float32, SGD; {cfg['cpu_count']} CPU cores ({cfg['machine']}); "
    f"torch {cfg.get('torch', '?')} with {cfg.get('torch_threads', '?')} threads; each variant: "
    f"{cfg['repeats']} processes x {cfg['steps']} alternating jax/torch steps; "
    f"load average at start {cfg['load_average']}; {result['timestamp']}.",
    "",
    "| XLA option set | XLA_FLAGS | sslax s/step | sslax img/s | torch s/step (same process) | "
    "sslax speed / torch | sslax CPU-s/step | torch CPU-s/step | CPU-time ratio | compile s |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name, row in result["variants"].items():
    if "error" in row:
      lines.append(f"| {name} | `{row['flags']}` | failed: {row['error'][:120]} |" + " |" * 7)
      continue
    lines.append(
      f"| {name} | `{row['flags'] or '(none)'}` | {row['step_s']:.3f} | "
      f"{row['images_per_s']:.0f} | {row['torch_step_s']:.3f} | "
      f"**{row['ratio_vs_torch']:.2f}x** | {row['cpu_s']:.2f} | {row['torch_cpu_s']:.2f} | "
      f"{row['cpu_ratio_vs_torch']:.2f}x | {row['compile_s']:.1f} |"
    )
  lines += [
    "",
    "Speed ratio: median over all step pairs of torch step time / sslax step time "
    "(>1: sslax faster). CPU-time ratio: torch CPU seconds per step / sslax CPU seconds "
    "per step (all threads; robust to other load, the fair ranking on a busy machine). "
    "Regenerate: `python benchmarks/torch_compare.py` "
    "(add `--variants all` for every option set).",
    "",
  ]
  with open(path, "w") as f:
    f.write("\n".join(lines))


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--width", type=float, default=0.25, help="ResNet-18 width multiplier.")
  p.add_argument("--batch", type=int, default=256, help="Images per step (x2 views).")
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--steps", type=int, default=4, help="Timed step pairs per process.")
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--repeats", type=int, default=1, help="Processes per variant.")
  p.add_argument(
    "--variants",
    default="xla_default,xnn_graph_greedy,onednn,fast_math",
    help=f"Comma-separated names from {sorted(VARIANTS)}, or 'all'.",
  )
  p.add_argument("--extra_flags", default="", help="Also try these XLA_FLAGS as variant 'custom'.")
  p.add_argument("--worker_timeout", type=int, default=600)
  p.add_argument(
    "--out",
    default=os.path.join(HERE, "results", "torch_compare"),
    help="Output path without extension (.json and .md are written).",
  )
  args = p.parse_args()

  if args.worker:
    print(json.dumps(pair_worker(args)))
    return

  names = list(VARIANTS) if args.variants == "all" else [v for v in args.variants.split(",") if v]
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    raise SystemExit(f"Unknown --variants {unknown}; choose from {sorted(VARIANTS)} or 'all'.")
  variants = {n: VARIANTS[n] for n in names}
  if args.extra_flags:
    variants["custom"] = args.extra_flags

  result = {
    "setup": {
      "width": args.width,
      "batch": args.batch,
      "image_size": args.image_size,
      "steps": args.steps,
      "repeats": args.repeats,
      "cpu_count": os.cpu_count(),
      "machine": platform.processor() or platform.machine(),
      "load_average": round(os.getloadavg()[0], 1),
    },
    "variants": {},
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }
  for name, flags in variants.items():
    runs = [_run_worker(args, flags) for _ in range(args.repeats)]
    ok = [r for r in runs if "jax_step_s" in r]
    if not ok:
      result["variants"][name] = {"flags": flags, "error": runs[0]["error"]}
      print(f"{name}: failed: {runs[0]['error']}", flush=True)
      continue
    jax_s = [t for r in ok for t in r["jax_step_s"]]
    torch_s = [t for r in ok for t in r["torch_step_s"]]
    ratios = [t / j for r in ok for j, t in zip(r["jax_step_s"], r["torch_step_s"])]
    jax_cpu = [t for r in ok for t in r["jax_cpu_s"]]
    torch_cpu = [t for r in ok for t in r["torch_cpu_s"]]
    result["setup"].update(torch=ok[0]["torch"], torch_threads=ok[0]["threads"])
    row = result["variants"][name] = {
      "flags": flags,
      "step_s": _median(jax_s),
      "images_per_s": args.batch / _median(jax_s),
      "torch_step_s": _median(torch_s),
      "ratio_vs_torch": _median(ratios),
      "cpu_s": _median(jax_cpu),
      "torch_cpu_s": _median(torch_cpu),
      "cpu_ratio_vs_torch": _median(torch_cpu) / _median(jax_cpu),
      "compile_s": _median([r["compile_s"] for r in ok]),
      "flops_per_step": ok[0]["flops"],
      "raw": ok,
    }
    print(
      f"{name}: sslax {row['step_s']:.3f} s/step, torch {row['torch_step_s']:.3f} s/step, "
      f"ratio {row['ratio_vs_torch']:.2f}x; CPU-s/step sslax {row['cpu_s']:.2f} torch "
      f"{row['torch_cpu_s']:.2f}",
      flush=True,
    )
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out + ".json", "w") as f:
    json.dump(result, f, indent=2)
  write_markdown(result, args.out + ".md")
  print(open(args.out + ".md").read())


if __name__ == "__main__":
  main()
