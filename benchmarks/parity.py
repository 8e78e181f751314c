r"""Independent-implementation parity: sslax against PyTorch + lightly on the same five recipes.

  python benchmarks/parity.py --torch_python /work/parity_venv/bin/python
  python benchmarks/parity.py --methods simclr --seeds 0 --steps 5 --workdir /tmp/p --out /tmp/p
  python benchmarks/parity.py --frameworks torch &   # two instances share the jobs (locks)
  python benchmarks/parity.py --collect_only          # the table from the runs finished so far

For SimCLR, BYOL, Barlow Twins, SwAV and DINO, the Fashion-MNIST config
(configs/<method>_fashion_mnist.py) at the learning table's budget (benchmarks/learning.py: 300
steps of global batch 256, kNN bank = the first 10,000 training images, test = the 10k test
images) is trained twice per seed: by sslax (`learning.run_method`, seed via --config.seed) and
by benchmarks/_parity_torch.py, the same recipe written in PyTorch with lightly's loss and head
modules and its own augmentation, run with the torch venv's python (--torch_python) so sslax's
environment stays free of torch. The torch side's backbone features of the bank and test images
(the eval view: the whole 28 px image in [0, 1]) are scored with sslax's own kNN
(`sslax.evaluation.knn.knn_accuracy`, k = 20 and 200, T = 0.07), so only training differs.

Writes --out/parity.json (every finished (framework, method, seed) run; the script resumes from
it, and from finished runs in --workdir) and --out/parity.md (the table). Several instances may
share --workdir / --out (e.g. one with --frameworks sslax, one with --frameworks torch): a job
another live instance runs is marked by <job dir>.lock and waited for, and parity.json is merged
on every write. Acceptance (issue 14): for each method the
mean kNN k=20 of sslax's two seeds is within max(1.5, 2 x spread) points of PyTorch's, where
spread = the larger of the two frameworks' |seed 0 - seed 1| (k=20, points). The step time is
the mean wall time of training steps 101-300 (both sides: the first 100 steps, with sslax's
compilation, are excluded): sslax's from its metrics.jsonl `step_s` (input pipeline running
beside the step), torch's from its loop (augmentation in the loop, on the same 2 threads).
Seed-0 sslax runs already made by `benchmarks/learning.py --workdir /tmp/sslax_learning` are
reused when their config.json has the same steps, batch, seed and kNN bank (--reuse_workdir).

Torch side setup (torch and lightly are not sslax dependencies; a separate venv):
  python3.11 -m venv /work/parity_venv
  /work/parity_venv/bin/pip install torch==2.13.0 numpy   # the CPU wheel
  /work/parity_venv/bin/pip install --no-deps lightly==1.6.0
lightly's loss and head modules need nothing else at import time except torchvision
(`lightly.loss` imports `torchvision.ops.roi_align`), which does not import beside the CPU torch
wheel: _parity_torch.py loads sslax/_torchvision_stub.py as `torchvision` when the real one
fails (nothing of torchvision is called).

What is the same on both sides (each read from the sslax config the script passes as JSON):
ResNet-10 x1/4 (basic blocks, widths 16-32-64-128, small stem 3x3/1 without pool, symmetric
k // 2 padding, 1x1/2 projection shortcut + BN, last BN scale of each block zero-initialised,
convs N(0, 2 / fan_out), BN eps 1e-5 and momentum 0.9 (torch 0.1)); heads with the same layers,
biases and BatchNorms, Linear weights initialised as flax's (truncated normal, variance
1 / fan_in; DINO's MLP: std 0.02, see below) and zero biases; the loss, with sslax's scale
(lightly's value x 2 for NT-Xent, 4 + 2 x (both negative cosines) for BYOL, as is for the
others; checked once on random inputs: sslax's and lightly's five losses agree to 1e-6);
AdamW (0.9, 0.999, eps 1e-8) at lr 2e-3 (DINO 1e-3), weight decay 1e-4 on weights only (biases
and 1-D params excluded), linear warmup from 0 over int(0.5 x 234) = 117 steps then cosine to 0
at step 300 (the lr of step k is the schedule at k, so step 0 has lr 0); BatchNorm batches: per
view (BYOL, Barlow Twins), over both views (SimCLR), per crop-size group in the backbone and over
all crops in the head (SwAV, DINO); the EMA targets (BYOL 0.99, DINO 0.99, cosine to 1 over
300 steps; the update after step k uses the momentum at k; params only, the targets' BN running
statistics from their own train-mode passes); the augmentation parameters: crop scale and ratio
(3/4, 4/3) with torchvision's 10 attempts, flip 0.5, brightness and contrast jitter 0.8 w.p.
0.8 in random order, clipped after each (saturation, hue and grayscale do nothing to grey
images), blur sigma U(0.1, 2) with a 3-tap kernel (10% of the side, odd, >= 3) and mirrored
edges, solarize (x >= 0.5 -> 1 - x); the per-view blur / solarize probabilities, multi-crop
sizes, scales and counts of each config.

Modules: lightly's NTXentLoss, NegativeCosineSimilarity, BarlowTwinsLoss, SwaVLoss, DINOLoss;
heads from lightly's SimCLRProjectionHead (its last BN's shift frozen at 0: SimCLR's
BN(center=False), as sslax), ProjectionHead (BYOL's projector / predictor and Barlow Twins'
projector: lightly's BYOLProjectionHead and BarlowTwinsProjectionHead put a bias on the last
Linear, which neither BYOL's nor Barlow Twins' reference nor sslax has), SwaVProjectionHead,
SwaVPrototypes (its bias removed: the reference's and sslax's prototypes have none) and
DINOProjectionHead; lightly.models.utils.update_momentum for the EMAs. The ResNet, the
augmentation, the schedules and the training loop are plain torch.

Where the two sides cannot be identical:
- Random streams: initial weights, data order (torch: a fresh permutation per epoch) and every
  augmentation draw come from each framework's own RNG; the seeds only name runs.
- Resize: both sides crop then resize bilinearly with half-pixel centres, no antialiasing, and
  read no pixel outside the crop (TF's tf.image.resize / F.interpolate semantics); torchvision's
  RandomResizedCrop on tensors antialiases when it shrinks a crop (here only local crops larger
  than 14 px, rare); torchvision's GaussianBlur pads by reflection, sslax and this torch side
  by mirroring the edge pixel.
- BatchNorm running variance: flax stores the biased batch variance, torch the unbiased one
  (x n / (n - 1), n >= 256 x 16 pixels in the backbone's last stage); only evaluation reads it.
- Biases right before a BatchNorm: BYOL's sslax projector has one, DINO's sslax head has them
  (the DINO reference's Linear default), lightly's DINOProjectionHead has none before its BNs.
  Such a bias gets zero gradient in train mode and is subtracted out by the BN: no effect.
- SwAV prototypes: lightly (and the reference) renormalise the stored prototype matrix in
  place before every step; sslax normalises it in the forward pass (weight normalisation), so
  its gradient and weight decay act on the unnormalised matrix (sslax/methods/swav.py says so).
  Both freeze the prototypes for the first 100 steps (no update, no Adam state).
- SwAV Sinkhorn: lightly skips the division by K in the prototype step (the next column
  normalisation removes it) and does not subtract the max score before exp (scores are
  cosines / 0.05, at most e^20: no overflow); the codes are the same up to rounding.
- DINO last-layer freeze: lightly's `cancel_last_layer_gradients` counts epochs; here the
  gradients are dropped for the first round(0.2 x 234) = 47 steps, as sslax's `freeze_for_steps`.
  DINO's prototype directions (weight_v) start from flax's init (lecun normal) instead of torch's
  Linear default. DINO's MLP: lightly (as the reference) draws N(0, 0.02) cut at +-2
  (absolute, so untruncated), flax's truncated_normal(0.02) cuts at 2 std (std 0.0176).
  lightly's weight-normalised last layer keeps a gain (weight_g = 1, frozen: norm_last_layer)
  that the EMA copies (1 -> 1).
- Step time: sslax runs the XLA step with its tf.data input pipeline in background threads on
  the same 2 cores; the torch side augments in the loop (torch.set_num_threads(2)), so its
  step time includes augmentation (result.json also has the compute-only time); its ResNet
  runs in channels_last (oneDNN's fast CPU path, ~1.5x fewer CPU seconds than NCHW here) with
  OMP_WAIT_POLICY=PASSIVE (under load 20-30 from other jobs, spinning OpenMP threads made a
  2-thread SimCLR step 47 s instead of 10 s; XLA's thread pool does not spin like that). Runs
  made at different times see different load from other jobs on this shared machine: the
  ratio is only indicative (load averages are recorded per run).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
METHODS = ("simclr", "byol", "barlow_twins", "swav", "dino")
TORCH_WORKER = os.path.join(HERE, "_parity_torch.py")
TIMED_AFTER_STEP = 100  # step times average steps TIMED_AFTER_STEP + 1 .. steps (both sides)


# ---------------------------------------------------------------------------------------------
# Recipes and data (sslax's environment)
# ---------------------------------------------------------------------------------------------


def load_config(method: str, args):
  """The method's Fashion-MNIST config at the benchmark budget, as learning.run_method sets it."""
  path = os.path.join(REPO, "configs", f"{method}_fashion_mnist.py")
  spec = importlib.util.spec_from_file_location(f"parity_config_{method}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.total_steps = args.steps
  config.batch_size = args.batch_size
  config.eval.num_train_examples = args.eval_train
  return config


def write_recipe(method: str, args) -> str:
  """The config as the JSON the torch side reads (its `recipe`)."""
  c = load_config(method, args).to_dict()
  recipe = {
    "method": method,
    "total_steps": c["total_steps"],
    "batch_size": c["batch_size"],
    "image_size": c["dataset"]["image_size"],
    "augment": c["augment"],
    "model": c["model"],
    "optimizer": c["optimizer"],
    method: c[method],
    "eval": {k: c["eval"][k] for k in ("knn_ks", "knn_temperature", "crop_fraction")},
  }
  path = os.path.join(args.workdir, "recipes", f"{method}.json")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(recipe, f, indent=2, default=list)
  return path


def data_file(args) -> str:
  """Fashion-MNIST train / test arrays as read by sslax (its sources), for the torch side."""
  path = os.path.join(args.workdir, "fashion_mnist.npz")
  if os.path.exists(path):
    return path
  from sslax.data import sources  # local: --help must not import jax / TensorFlow

  arrays = {}
  for split in ("train", "test"):
    src = sources.get_source("fashion_mnist", split)
    arrays[f"{split}_images"] = np.asarray(src.images, np.uint8)
    arrays[f"{split}_labels"] = np.asarray(src.labels, np.int32)
  os.makedirs(args.workdir, exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)
  return path


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def _load() -> list[float]:
  return [round(x, 2) for x in os.getloadavg()]


def sslax_step_s(workdir: str) -> float | None:
  """Mean step time over the logged intervals after step TIMED_AFTER_STEP (metrics.jsonl)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  rows = [r for r in rows if "step_s" in r]
  total, steps, prev = 0.0, 0, 0
  for r in rows:
    if r["step"] > TIMED_AFTER_STEP and prev >= TIMED_AFTER_STEP:
      total += r["step_s"] * (r["step"] - prev)
      steps += r["step"] - prev
    prev = r["step"]
  if not steps and rows:  # short runs: the last interval
    return rows[-1]["step_s"]
  return total / steps if steps else None


def finished_sslax(workdir: str, args, seed: int) -> dict | None:
  """The report of a finished sslax run in `workdir` with this budget and seed, else None."""
  from sslax import workdir as workdir_lib  # local: --help must not import jax / TensorFlow

  cfg_path = os.path.join(workdir, "config.json")
  if not os.path.exists(cfg_path):
    return None
  with open(cfg_path) as f:
    cfg = json.load(f)
  same = (
    cfg.get("total_steps") == args.steps
    and cfg.get("batch_size") == args.batch_size
    and cfg.get("seed", 0) == seed
    and cfg.get("eval", {}).get("num_train_examples") == args.eval_train
  )
  if not same:
    return None
  record = workdir_lib.latest_record(workdir_lib.read_results(workdir), "report")
  if record is None or record.get("step") != args.steps:
    return None
  res = record["results"]["pretrained"]
  return {
    "knn_k20": 100 * res["knn_top1_k20"],
    "knn_k200": 100 * res["knn_top1_k200"],
    "step_s": sslax_step_s(workdir),
    "workdir": workdir,
    "finished": record.get("timestamp"),
  }


def job_dir(framework: str, method: str, seed: int, args) -> str:
  if framework == "sslax":
    return os.path.join(args.workdir, f"sslax_seed{seed}", method)
  return os.path.join(args.workdir, "torch", f"{method}_seed{seed}")


def run_sslax(method: str, seed: int, args) -> dict:
  sys.path.insert(0, HERE)
  import learning  # benchmarks/learning.py

  workdir = job_dir("sslax", method, seed, args)
  if os.path.exists(workdir):  # an interrupted run of ours: start again (clean step times)
    shutil.rmtree(workdir)
  ns = argparse.Namespace(
    workdir=os.path.dirname(workdir),
    steps=args.steps,
    batch_size=args.batch_size,
    eval_train=args.eval_train,
    seed=seed,
    reuse=False,
  )
  load_before = _load()
  # run_method(method, args[, previous row]): the table's row of one fresh run.
  extra = ({},) if len(inspect.signature(learning.run_method).parameters) > 2 else ()
  row = learning.run_method(method, ns, *extra)
  if "error" in row:
    raise RuntimeError(f"sslax {method} seed {seed} failed:\n{row['error']}")
  result = finished_sslax(workdir, args, seed)
  if result is None:
    raise RuntimeError(f"sslax {method} seed {seed}: no report in {workdir}")
  result.update(wall_s=row["wall_s"], load_before=load_before, load_after=_load())
  return result


def finished_torch(method: str, seed: int, args) -> dict | None:
  """A finished torch run in its job dir (this budget), scored with sslax's kNN; else None."""
  from sslax.evaluation import knn  # local: --help must not import jax / TensorFlow

  out = job_dir("torch", method, seed, args)
  paths = [os.path.join(out, name) for name in ("result.json", "features.npz")]
  if not all(os.path.exists(p) for p in paths):
    return None
  with open(paths[0]) as f:
    result = json.load(f)
  if result.get("steps") != args.steps or result.get("batch_size") != args.batch_size:
    return None
  with np.load(paths[1], allow_pickle=False) as d:
    if len(d["bank"]) != args.eval_train:
      return None
    acc = knn.knn_accuracy(
      d["bank"], d["bank_labels"], d["test"], d["test_labels"], num_classes=10, ks=(20, 200)
    )
  result.update(knn_k20=100 * acc[20], knn_k200=100 * acc[200], workdir=out)
  return result


def run_torch(method: str, seed: int, args) -> dict:
  out = job_dir("torch", method, seed, args)
  for name in ("result.json", "features.npz"):  # an interrupted or older run of ours
    if os.path.exists(os.path.join(out, name)):
      os.remove(os.path.join(out, name))
  os.makedirs(out, exist_ok=True)
  cmd = [
    args.torch_python,
    TORCH_WORKER,
    f"--method={method}",
    f"--seed={seed}",
    f"--recipe={write_recipe(method, args)}",
    f"--data={data_file(args)}",
    f"--out={out}",
    f"--eval_train={args.eval_train}",
    f"--threads={args.torch_threads}",
  ]
  # Passive OpenMP waits: on this shared, oversubscribed machine (load 20-30 on 2 cores) torch's
  # spinning threads ran a SimCLR step ~4.7x slower (47 s vs 10 s, 2 threads, measured).
  env = dict(os.environ, OMP_NUM_THREADS=str(args.torch_threads), OMP_WAIT_POLICY="PASSIVE")
  load_before, t0 = _load(), time.time()
  with open(os.path.join(out, "log.txt"), "w") as log:
    proc = subprocess.run(cmd, check=False, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
  wall = time.time() - t0
  if proc.returncode != 0:
    with open(os.path.join(out, "log.txt")) as f:
      tail = f.read()[-3000:]
    raise RuntimeError(f"torch {method} seed {seed} failed (exit {proc.returncode}):\n{tail}")
  result = finished_torch(method, seed, args)
  if result is None:
    raise RuntimeError(f"torch {method} seed {seed}: no result in {out}")
  result.update(
    wall_s=round(wall, 1),
    load_before=load_before,
    load_after=_load(),
  )
  return result


def finished(framework: str, method: str, seed: int, args) -> dict | None:
  if framework == "sslax":
    return finished_sslax(job_dir("sslax", method, seed, args), args, seed)
  return finished_torch(method, seed, args)


def _lock_path(framework, method, seed, args) -> str:
  return job_dir(framework, method, seed, args).rstrip("/") + ".lock"


def locked_elsewhere(framework, method, seed, args) -> bool:
  """True while another live process of this script runs the job (its pid in the lock file)."""
  try:
    with open(_lock_path(framework, method, seed, args)) as f:
      pid = int(f.read().strip() or 0)
  except (OSError, ValueError):
    return False
  if pid == os.getpid() or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class JobLock:
  """Marks a job as running in this process, so a second instance of the script skips it."""

  def __init__(self, framework, method, seed, args):
    self.path = _lock_path(framework, method, seed, args)

  def __enter__(self):
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    with open(self.path, "w") as f:
      f.write(str(os.getpid()))
    return self

  def __exit__(self, *exc):
    if os.path.exists(self.path):
      os.remove(self.path)


# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------


def summarize(runs: dict, methods, seeds) -> list[dict]:
  rows = []
  for m in methods:
    row = {"method": m}
    for fw in ("sslax", "torch"):
      got = [runs.get(f"{fw}/{m}/{s}") for s in seeds]
      row[fw] = {
        "k20": [g["knn_k20"] if g else None for g in got],
        "k200": [g["knn_k200"] if g else None for g in got],
        "step_s": [g.get("step_s") if g else None for g in got],
      }
    complete = all(v is not None for fw in ("sslax", "torch") for v in row[fw]["k20"])
    if complete:
      mean = {fw: float(np.mean(row[fw]["k20"])) for fw in ("sslax", "torch")}
      spread = max(float(np.ptp(row[fw]["k20"])) for fw in ("sslax", "torch"))
      allowed = max(1.5, 2 * spread)
      diff = abs(mean["sslax"] - mean["torch"])
      row.update(
        k20_mean=mean,
        spread=spread,
        diff=diff,
        allowed=allowed,
        passed=bool(diff <= allowed),
        k200_mean={fw: float(np.mean(row[fw]["k200"])) for fw in ("sslax", "torch")},
      )
    times = {fw: [t for t in row[fw]["step_s"] if t is not None] for fw in ("sslax", "torch")}
    if times["sslax"] and times["torch"]:
      row["step_s_mean"] = {fw: float(np.mean(t)) for fw, t in times.items()}
      row["step_time_ratio"] = row["step_s_mean"]["sslax"] / row["step_s_mean"]["torch"]
    rows.append(row)
  return rows


def _fmt(values) -> str:
  return " / ".join("-" if v is None else f"{v:.2f}" for v in values)


def markdown(rows, meta) -> str:
  lines = [
    (
      f"Parity (benchmarks/parity.py), {meta['date']}: {meta['steps']} steps x batch "
      f"{meta['batch_size']}, kNN bank = first {meta['eval_train']} train images, Fashion-MNIST "
      f"test set; seeds {', '.join(map(str, meta['seeds']))}. sslax {meta['sslax_version']} vs "
      f"PyTorch {meta.get('torch_version', '?')} + lightly {meta.get('lightly_version', '?')} "
      f"(torch threads {meta['torch_threads']})."
    ),
    "",
    (
      "| method | sslax k=20 s0 / s1 | sslax mean | torch k=20 s0 / s1 | torch mean | abs diff "
      "| allowed (spread) | pass | k=200 mean sslax / torch | step s sslax / torch "
      "| ratio sslax/torch |"
    ),
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    s, t = r["sslax"], r["torch"]
    if "diff" in r:
      mid = (
        f"{r['k20_mean']['sslax']:.2f} | {_fmt(t['k20'])} | {r['k20_mean']['torch']:.2f} | "
        f"{r['diff']:.2f} | {r['allowed']:.2f} ({r['spread']:.2f}) | "
        f"{'yes' if r['passed'] else '**no**'} | "
        f"{r['k200_mean']['sslax']:.2f} / {r['k200_mean']['torch']:.2f}"
      )
    else:
      mid = f"- | {_fmt(t['k20'])} | - | - | - | pending | -"
    if "step_time_ratio" in r:
      st = r["step_s_mean"]
      speed = f"{st['sslax']:.2f} / {st['torch']:.2f} | {r['step_time_ratio']:.2f}"
    else:
      speed = "- | -"
    lines.append(f"| {r['method']} | {_fmt(s['k20'])} | {mid} | {speed} |")
  lines += [
    "",
    (
      "kNN: top-1 % of the weighted kNN (T = 0.07) on backbone features, both frameworks scored by "
      "sslax.evaluation.knn. allowed = max(1.5, 2 x spread), spread = the larger of the two "
      "frameworks' |seed 0 - seed 1| at k=20; pass: |mean sslax - mean torch| <= allowed. Step "
      f"time: mean wall seconds of steps {TIMED_AFTER_STEP + 1}-{meta['steps']} (sslax: "
      "metrics.jsonl step_s, input pipeline in background threads; torch: the loop, augmentation "
      "included), averaged over the seeds; ratio < 1: sslax faster."
    ),
    "",
    (
      f"Machine: {meta['cpu']}, {meta['cpu_count']} cores, shared with other jobs: load average "
      f"{meta['load_range'][0]:.1f}-{meta['load_range'][1]:.1f} at the starts and ends of the "
      "runs, "
      "so step times are inflated and the ratio is indicative only."
    ),
  ]
  return "\n".join(lines) + "\n"


def cpu_model() -> str:
  try:
    out = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
  except OSError:
    return "?"
  for line in out.splitlines():
    if line.startswith("Model name"):
      return line.split(":", 1)[1].strip()
  return "?"


def read_runs(args) -> dict:
  """The runs cached in --out/parity.json with this budget."""
  path = os.path.join(args.out, "parity.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    runs = json.load(f).get("runs", {})
  return {
    k: v
    for k, v in runs.items()
    if v.get("steps", args.steps) == args.steps
    and v.get("batch_size", args.batch_size) == args.batch_size
  }


def write_outputs(runs: dict, args, methods, seeds):
  """Writes parity.json / parity.md from `runs` merged with those another instance of this
  script has written meanwhile (ours win); returns (rows, table)."""
  import sslax  # local: --help must not import jax / TensorFlow

  runs.update({k: v for k, v in read_runs(args).items() if k not in runs})

  loads = [
    x for r in runs.values() for key in ("load_before", "load_after") for x in r.get(key, [])[:1]
  ]
  torch_runs = [r for k, r in runs.items() if k.startswith("torch/")]
  meta = {
    "date": datetime.date.today().isoformat(),
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    "steps": args.steps,
    "batch_size": args.batch_size,
    "eval_train": args.eval_train,
    "seeds": list(seeds),
    "torch_threads": args.torch_threads,
    "sslax_version": getattr(sslax, "__version__", "?"),
    "torch_version": torch_runs[0].get("torch_version") if torch_runs else None,
    "lightly_version": torch_runs[0].get("lightly_version") if torch_runs else None,
    "cpu": cpu_model(),
    "cpu_count": os.cpu_count(),
    "load_range": [min(loads), max(loads)] if loads else [0.0, 0.0],
    "spread_definition": "max over frameworks of |k20(seed0) - k20(seed1)|, points",
  }
  rows = summarize(runs, methods, seeds)
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "parity.json")
  with open(path + f".{os.getpid()}.tmp", "w") as f:
    json.dump({"meta": meta, "rows": rows, "runs": runs}, f, indent=2)
  os.replace(path + f".{os.getpid()}.tmp", path)
  table = markdown(rows, meta)
  with open(os.path.join(args.out, "parity.md"), "w") as f:
    f.write(table)
  return rows, table


def main():
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--frameworks", default="sslax,torch")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--eval_train", type=int, default=10000)
  parser.add_argument("--torch_python", default="/work/parity_venv/bin/python")
  parser.add_argument("--torch_threads", type=int, default=2)
  parser.add_argument("--workdir", default="/tmp/sslax_parity", help="runs, recipes, data")
  parser.add_argument(
    "--reuse_workdir",
    default="/tmp/sslax_learning",
    help="benchmarks/learning.py workdir root whose finished <method> runs are reused "
    "(same steps, batch, seed and kNN bank); '' to never reuse",
  )
  parser.add_argument(
    "--reuse_wait_s",
    type=float,
    default=0.0,
    help="after every other run, wait this long for a reusable run still in progress "
    "there before training it here",
  )
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
  parser.add_argument("--rerun", action="store_true", help="ignore the runs cached in parity.json")
  parser.add_argument(
    "--collect_only",
    action="store_true",
    help="train nothing: gather the finished runs (parity.json, --workdir, --reuse_workdir) and "
    "write the table",
  )
  args = parser.parse_args()
  methods = [m for m in args.methods.split(",") if m]
  seeds = [int(s) for s in args.seeds.split(",") if s]
  frameworks = [f for f in args.frameworks.split(",") if f]
  for m in methods:
    if m not in METHODS:
      parser.error(f"--methods: {m!r} is not one of {METHODS}")
  for fw in frameworks:
    if fw not in ("sslax", "torch"):
      parser.error(f"--frameworks: {fw!r} is not sslax or torch")
  if "torch" in frameworks and not os.path.exists(args.torch_python):
    parser.error(
      f"--torch_python {args.torch_python} does not exist; make the torch venv first "
      "(see this script's docstring: python benchmarks/parity.py --help)"
    )

  runs = {} if args.rerun else read_runs(args)
  pending = [(fw, m, s) for m in methods for s in seeds for fw in frameworks]
  deadline = time.time() + args.reuse_wait_s
  failed = []

  def record(key, result):
    result.setdefault("steps", args.steps)
    result.setdefault("batch_size", args.batch_size)
    runs[key] = result
    write_outputs(runs, args, methods, seeds)
    print(f"{key}: kNN k=20 {result['knn_k20']:.2f} k=200 {result['knn_k200']:.2f}", flush=True)

  def reusable(m, s):
    """(finished run of --reuse_workdir or None, whether one is in progress there)."""
    if not args.reuse_workdir:
      return None, False
    workdir = os.path.join(args.reuse_workdir, m)
    found = finished_sslax(workdir, args, s)
    in_progress = False
    if found is None and os.path.exists(os.path.join(workdir, "config.json")):
      with open(os.path.join(workdir, "config.json")) as f:
        cfg = json.load(f)
      in_progress = cfg.get("seed", 0) == s and cfg.get("total_steps") == args.steps
    return found, in_progress

  # Jobs in order; one that another instance of this script is running (its lock) or that
  # --reuse_workdir is still training (until --reuse_wait_s) waits while later ones run.
  while pending:
    ran = False
    for job in list(pending):
      fw, m, s = job
      key = f"{fw}/{m}/{s}"
      busy = locked_elsewhere(fw, m, s, args)
      done = None if (busy or args.rerun) else finished(fw, m, s, args)
      if key in runs or done is not None:
        if key not in runs:
          record(key, done)  # finished earlier, or by another instance of this script
        pending.remove(job)
        continue
      found, in_progress = reusable(m, s) if fw == "sslax" else (None, False)
      if found is not None:
        record(key, dict(found, reused=True))
        pending.remove(job)
        continue
      if args.collect_only:
        pending.remove(job)
        continue
      if busy or (in_progress and time.time() < deadline):
        continue
      print(f"--- {key} ({time.strftime('%H:%M:%S')}, load {_load()})", flush=True)
      try:
        with JobLock(fw, m, s, args):
          result = run_sslax(m, s, args) if fw == "sslax" else run_torch(m, s, args)
      except RuntimeError as e:
        print(f"{key} FAILED: {e}", flush=True)
        failed.append(key)
      else:
        record(key, result)
      pending.remove(job)
      ran = True
      break  # rescan from the first job: waiting ones may have finished meanwhile
    if pending and not ran:
      time.sleep(30)

  rows, table = write_outputs(runs, args, methods, seeds)
  print(table)
  done = [r for r in rows if "passed" in r]
  ok = not failed and len(done) == len(rows) and all(r["passed"] for r in done)
  sys.exit(0 if ok else 1)


if __name__ == "__main__":
  main()
