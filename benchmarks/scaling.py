r"""Contrastive losses: step time and per-device memory vs devices and global batch.

  python benchmarks/scaling.py                                   # ~1-2 min on 2 cores
  python benchmarks/scaling.py --devices 1,2,4,8,16 --batches 256,1024,4096 --dim 256

For every (number of devices, global batch B) it times loss + gradient w.r.t. the
embeddings, jitted over a mesh of that many devices with the batch sharded (the same
`sharding.shard_over_batch` the methods use), and reads the per-device temporary memory from
XLA's memory analysis. Losses: NT-Xent (SimCLR; per-device logits [2b, 2B]) and CLIP's
InfoNCE all-gather and chunked ring variants (per-device logits [b, B] and [b, b]).

On a CPU the "devices" are fake (XLA_FLAGS=--xla_force_host_platform_device_count=N) and
share the cores, so step time shows the overhead of splitting, not a speed-up; the memory
column is what scales as on real hardware: per-device logits memory O(b x B) for the
all-gather losses (constant in N at fixed b) and O(b x b) for the ring. Each device count
runs in its own process. Writes benchmarks/results/scaling.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(args) -> list[dict]:
  sys.path.insert(0, ROOT)
  import jax
  import jax.numpy as jnp
  import numpy as np
  from sslax import losses, perf, sharding

  mesh = sharding.make_mesh({"data": -1, "fsdp": 1})
  n = mesh.devices.size
  losses_by_name = {
    "nt_xent": lambda a, b, axis_name: losses.nt_xent_loss(a, b, 0.2, axis_name=axis_name)[0],
  }
  try:
    from sslax.losses import clip as clip_lib

    losses_by_name["clip_gather"] = lambda a, b, axis_name: clip_lib.clip_loss(
      a, b, jnp.log(1 / 0.07), axis_name=axis_name
    )[0]
    losses_by_name["clip_ring"] = lambda a, b, axis_name: clip_lib.clip_loss(
      a, b, jnp.log(1 / 0.07), axis_name=axis_name, chunked=True
    )[0]
  except ImportError:
    pass
  rows = []
  for name, fn in losses_by_name.items():
    for batch in args.batches:
      if batch % n:
        continue
      loss = sharding.shard_over_batch(fn, mesh, num_args=2)
      step = jax.jit(
        jax.value_and_grad(lambda a, b: loss(a, b), argnums=(0, 1)),
        in_shardings=(sharding.batch_sharding(mesh),) * 2,
      )
      rng = np.random.default_rng(0)
      a = jax.device_put(
        rng.standard_normal((batch, args.dim), np.float32), sharding.batch_sharding(mesh)
      )
      b = jax.device_put(
        rng.standard_normal((batch, args.dim), np.float32), sharding.batch_sharding(mesh)
      )
      try:
        compiled = step.lower(a, b).compile()
      except Exception as e:
        rows.append({"loss": name, "devices": n, "batch": batch, "error": str(e)[:200]})
        continue
      jax.block_until_ready(compiled(a, b))
      times = []
      for _ in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(a, b))
        times.append(time.perf_counter() - t0)
      mem = perf.memory_stats(compiled)
      rows.append(
        {
          "loss": name,
          "devices": n,
          "batch": batch,
          "local_batch": batch // n,
          "step_ms": 1e3 * float(np.median(times)),
          "temp_mb_per_device": mem and mem["temp_mb"],
          "flops": perf.step_flops(compiled),
        }
      )
  return rows


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--devices", default="1,2,4,8", help="Device counts (fake CPU devices on a CPU).")
  p.add_argument("--batches", default="256,1024,4096", help="Global batch sizes.")
  p.add_argument("--dim", type=int, default=128, help="Embedding dimension.")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "scaling"))
  args = p.parse_args()
  args.batches = [int(b) for b in str(args.batches).split(",")]

  if args.worker:
    print(json.dumps(worker(args)))
    return

  rows = []
  for n in [int(d) for d in args.devices.split(",")]:
    env = dict(
      os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "")
    )
    if not env["JAX_PLATFORMS"]:
      env.pop("JAX_PLATFORMS")
      # Only fake devices on a CPU; on an accelerator use as many real ones as asked for.
      env["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}"
      ).strip()
    cmd = [
      sys.executable,
      os.path.abspath(__file__),
      "--worker",
      "--batches",
      ",".join(map(str, args.batches)),
      "--dim",
      str(args.dim),
      "--repeats",
      str(args.repeats),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
      raise SystemExit(f"worker with {n} devices failed:\n{out.stderr[-2000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    for r in got:
      print(json.dumps(r), flush=True)
    rows += got

  result = {
    "rows": rows,
    "dim": args.dim,
    "cpu_count": os.cpu_count(),
    "command": "python benchmarks/scaling.py " + " ".join(sys.argv[1:]),
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out + ".json", "w") as f:
    json.dump(result, f, indent=2)
  lines = [
    "# Contrastive losses: loss + gradient vs devices and global batch",
    "",
    f"Embedding dim {args.dim}; {os.cpu_count()} CPU cores (fake devices share them: "
    f"time shows splitting overhead, memory scales as on real devices); "
    f"{result['timestamp']}. Regenerate: `{result['command']}`.",
    "",
    "| loss | devices | global batch | per-device batch | ms (median) | temp MiB / device |",
    "|---|---|---|---|---|---|",
  ]
  for r in rows:
    if "error" in r:
      lines.append(
        f"| {r['loss']} | {r['devices']} | {r['batch']} | | failed: {r['error'][:80]} | |"
      )
    else:
      lines.append(
        f"| {r['loss']} | {r['devices']} | {r['batch']} | {r['local_batch']} | "
        f"{r['step_ms']:.1f} | {r['temp_mb_per_device']} |"
      )
  with open(args.out + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
