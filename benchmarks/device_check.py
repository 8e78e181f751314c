r"""One-command check of one GPU: bf16 train steps of four recipes and the CUDA StableHLO export.

  python benchmarks/device_check.py --size full   # on the GPU machine: ~8 minutes on an H200
  python benchmarks/device_check.py --size tiny   # anywhere (2-core CPU: ~3 min), same code
  options: --only simclr,mae,dino,clip,export  --out benchmarks/results/device_check.json
           --time_budget_s 540  --steps N  --warmup N  --batch N (per-device batch, every model)
           --override KEY=VALUE (repeatable; every model's config, e.g. model.attention=cudnn)

Models (each the train step of the real config, built by sslax's own path):
  simclr  configs/simclr_tpu.py        SimCLR ResNet-50, 2 x 224 px views
  mae     configs/mae_vitb16_tpu.py    MAE ViT-B/16, mask 0.75, 8-block decoder (remat on)
  dino    configs/dino_vits16_tpu.py   DINO with the backbone switched to ViT-B/16 (the paper's
                                       other model), 2 x 224 + 10 x 96 px crops
  clip    configs/clip_vitb32_tpu.py   CLIP ViT-B/32 + 12-layer text tower, ring (chunked) loss
  export  python -m sslax.export's stablehlo format (sslax.export.export_encoder) of the SimCLR
          ResNet-50 backbone, lowered for cpu and cuda, loaded back (sslax.load_encoder's path)
          and run on the device; its features are compared with the backbone applied directly.

Per model: `sslax.setup.build(config, devices=[one device], data_free=True)` (the data-free
RunInfo of `sslax.aot`: nothing is read from disk) -> `sslax.train.make_train_step` ->
`.lower(state, batch).compile()` on a random batch shaped as `sslax.aot.abstract_batch` says.
Reported: compile time (lower + XLA compile, jax's persistent compilation cache off), step time
over --steps steps after --warmup steps (dispatched back to back, synchronised at the end:
throughput, as the trainer's loop runs), images/s, FLOPs per step: the matmuls and convolutions
of the traced step (`sslax.perf.jaxpr_flops`, 2 per multiply-add, the same count on every
platform; forward, backward, and recomputation where a config remats: hardware FLOPs, so MAE's
figure is slightly above model FLOPs; XLA's compiled count is kept beside it, but on GPU it
misses the work handed to cuBLAS/cuDNN: 0.43 of 25.9 TFLOP for SimCLR ResNet-50), MFU = achieved
FLOP/s / the GPU's data-sheet dense bf16 peak (`sslax.perf.VENDOR_PEAK_FLOPS`; null for an
unknown device or a CPU, with a note), the device's peak memory (`device.memory_stats()`) and
XLA's memory analysis of the compiled step.

Each model runs in its own process (unless --in_process): the device's peak-memory counter is
then that model's alone, an out-of-memory error or a crash loses only that row, and the time
budget is enforced by killing a child that would overrun it (later models are then marked
skipped). Every row that fails records its error and the run goes on. Writes one JSON file.

--size full: the configs' models at 224 px, per-GPU batches chosen to fit an 80 GB GPU (SimCLR
512, MAE 512, DINO 64, CLIP 512; the configs' own per-chip batches are 256, 256 and 64 on
v5e:4x4 and 128 on v5e:16x16). --size tiny: the same configs with tiny widths, 32 px images and batch 8 (ResNet-18
at width 1/8 for ResNet-50), for CI and a first run anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax
import jax.numpy as jnp
import numpy as np

from sslax import __version__, aot, export, models, perf, train
from sslax import config as config_lib
from sslax import setup as setup_lib
from sslax.data import text as text_lib

# Peaks: sslax.perf.VENDOR_PEAK_FLOPS, dense (no 2:4 sparsity) bf16 tensor-core FLOP/s from
# NVIDIA's data sheets, which print the sparse figure with an asterisk (dense = half): H100 SXM
# 989 TFLOP/s and H100 PCIe 756 (H100 Tensor Core GPU datasheet: BF16 1,979* / 1,513*); H200
# 989 (H200 datasheet: BF16 1,979*); A100 312 (A100 datasheet: BF16 312, 624*); L4 121 (L4
# datasheet: BF16 242*). An unlisted device gets MFU null and a note; add it there.
MFU_NOTE_UNKNOWN = (
  "MFU is null: {kind!r} is not in sslax.perf.VENDOR_PEAK_FLOPS (add its data-sheet dense bf16 "
  "peak there); achieved TFLOP/s is still reported."
)
MFU_NOTE_CPU = "MFU is null on CPU: a CPU has no data-sheet bf16 peak (see sslax.perf)."


@dataclasses.dataclass(frozen=True)
class Model:
  config: str  # configs/<file>.py
  full: tuple[str, ...]  # overrides (sslax's --config.key=value grammar, without the prefix)
  tiny: tuple[str, ...]
  what: str


_TINY_VIT = ("model.variant=custom", "model.hidden_size=32", "model.num_layers=1")
_TINY_VIT += ("model.num_heads=2", "model.patch_size=8", "dataset.image_size=32")
MODELS = {
  "simclr": Model(
    "configs/simclr_tpu.py",
    full=("batch_size=512",),
    tiny=("batch_size=8", "dataset.image_size=32", "model.depth=18", "model.width=0.125"),
    what="SimCLR ResNet-50, 2 views",
  ),
  "mae": Model(
    "configs/mae_vitb16_tpu.py",
    full=("batch_size=512",),
    tiny=("batch_size=8", *_TINY_VIT, "mae.decoder_width=32", "mae.decoder_depth=1")
    + ("mae.decoder_heads=2",),
    what="MAE ViT-B/16, mask 0.75",
  ),
  "dino": Model(
    "configs/dino_vits16_tpu.py",
    full=("batch_size=64", "model.variant=B"),
    tiny=("batch_size=8", *_TINY_VIT, "dino.local_crop_size=16", "dino.num_local_crops=2")
    + ("dino.out_dim=256", "dino.hidden_dim=64", "dino.bottleneck_dim=32"),
    what="DINO ViT-B/16, 2 global + 10 local crops",
  ),
  "clip": Model(
    "configs/clip_vitb32_tpu.py",
    full=("batch_size=512",),
    tiny=("batch_size=8", *_TINY_VIT, "text.width=32", "text.depth=1", "text.heads=2")
    + ("text.context_length=16", "clip.embed_dim=32"),
    what="CLIP ViT-B/32 + text transformer",
  ),
}
ROW_PREFIX = "device_check row: "  # how a child process hands its row to the parent
EXPORT_FROM = "simclr"  # the backbone the export check writes
ALL = (*MODELS, "export")
STEPS = {"tiny": (1, 3), "full": (3, 10)}  # (warmup, timed)
# Each item not yet run keeps this much of the time budget (s) while an earlier one runs.
RESERVE_S = {"tiny": 5.0, "full": 30.0}


def model_config(name: str, size: str, batch: int = 0, extra: tuple[str, ...] = ()):
  """The config of MODELS[name] at `size`, built from its configs/ file and overrides (then
  --batch, then --override's `extra`)."""
  spec = MODELS[name]
  config, _ = aot.load_config_file(os.path.join(REPO, spec.config))
  overrides = list(spec.tiny if size == "tiny" else spec.full)
  if batch:
    overrides.append(f"batch_size={batch}")
  overrides += list(extra)
  config_lib.apply_overrides(config, overrides)
  config.eval.at_end = False
  return config, overrides


def random_batch(s: setup_lib.Setup, seed: int = 0) -> dict:
  """A batch of `sslax.aot.abstract_batch(s)`'s shapes and shardings: normal pixels, random
  labels, and captions of random bytes between the start and end tokens (image-text)."""
  rng = np.random.default_rng(seed)
  abstract = aot.abstract_batch(s)
  batch = {}
  for key, value in abstract.items():
    if key == "views":  # made on the device (a full-size batch is ~1 GB of float32)
      keys = jax.random.split(jax.random.key(seed), len(value))
      shapes = [(v.shape, v.dtype) for v in value]
      normal = lambda k, shapes=shapes: tuple(
        jax.random.normal(k[i], shape, dtype) for i, (shape, dtype) in enumerate(shapes)
      )
      batch[key] = jax.jit(normal, out_shardings=tuple(v.sharding for v in value))(keys)
      continue
    if key == "tokens":
      b, length = value.shape
      tokens = np.full((b, length), text_lib.PAD, np.int32)
      lengths = rng.integers(1, length - 1, size=b)
      for i, n in enumerate(lengths):
        tokens[i, 0], tokens[i, 1 : 1 + n] = text_lib.SOT, rng.integers(1, 256, size=n)
        tokens[i, 1 + n] = text_lib.EOT
      host = tokens
    elif key == "label":
      host = rng.integers(0, 1000, size=value.shape, dtype=np.int32)
    else:  # index
      host = np.arange(value.shape[0], dtype=np.int32)
    batch[key] = jax.device_put(host, value.sharding)
  return batch


def _sig(x: float, digits: int = 4) -> float:
  """x to `digits` significant digits (tiny CPU steps and GPU TFLOP/s alike)."""
  return float(f"{x:.{digits}g}")


def _flops(lowered) -> float | None:
  """FLOPs XLA's cost analysis counts in the step's HLO before optimisation (no fusion, no
  library calls): a cross-check of the compiled figure, whose count a backend may miss."""
  try:
    analysis = lowered.cost_analysis()
  except Exception:  # noqa: BLE001 -- not every backend implements it
    return None
  flops = (analysis or {}).get("flops")
  return float(flops) if flops else None


def _device_memory(device) -> dict | None:
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001 -- some backends do not implement it
    return None
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  gib = lambda n: round(n / 2**30, 3)
  out = {"peak_gib": gib(stats["peak_bytes_in_use"])}
  if "bytes_limit" in stats:
    out["limit_gib"] = gib(stats["bytes_limit"])
  return out


def _peak(device) -> tuple[float | None, str | None]:
  if device.platform == "cpu":
    return None, MFU_NOTE_CPU
  vendor = perf.vendor_peak_flops(device.device_kind, "bfloat16")
  return vendor, None if vendor else MFU_NOTE_UNKNOWN.format(kind=device.device_kind)


def measure_model(
  name: str, size: str, *, warmup: int, steps: int, batch: int = 0, extra: tuple[str, ...] = ()
) -> dict:
  """Builds, compiles and times MODELS[name]'s train step on one device -> its row."""
  config, overrides = model_config(name, size, batch, extra)
  device = jax.devices()[0]
  row = {
    "model": name,
    "what": MODELS[name].what,
    "config": MODELS[name].config,
    "overrides": overrides,
    "method": config.method,
    "platform": device.platform,
    "device_kind": device.device_kind,
    "dtype": config.dtype,
    "batch_size": config.batch_size,
    "image_size": config.dataset.image_size,
  }
  s = setup_lib.build(config, devices=[device], data_free=True)
  row["views"] = [v.size for v in s.method.views()]
  state = setup_lib.init_state(s)
  batch_arrays = random_batch(s, config.seed)
  step = train.make_train_step(s)
  t0 = time.perf_counter()
  traced = step.trace(state, batch_arrays)
  lowered = traced.lower()
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  row.update(lower_s=round(t1 - t0, 2), compile_s=round(t2 - t1, 2))
  flops = perf.jaxpr_flops(traced.jaxpr)
  xla_flops = perf.step_flops(compiled)
  unoptimized = _flops(lowered)
  for _ in range(warmup):  # the first calls: allocator growth, autotuned kernels' first use
    state, metrics = compiled(state, batch_arrays)
  jax.block_until_ready((state, metrics))
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch_arrays)
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - t0) / steps
  loss = float(metrics["loss"])
  peak, note = _peak(device)
  flops_used = flops or None
  achieved = flops_used / step_s if flops_used else None
  row.update(
    warmup_steps=warmup,
    timed_steps=steps,
    step_s=_sig(step_s),
    images_per_s=round(config.batch_size / step_s, 1),
    flops_per_step=flops_used,
    flops_source="jaxpr matmul + convolution FLOPs (sslax.perf.jaxpr_flops)",
    # XLA's own counts, for reference: the compiled step's (on GPU it misses the cuBLAS/cuDNN
    # library calls, see sslax.perf) and the unoptimized HLO's (null where not implemented).
    xla_flops_per_step=xla_flops,
    flops_per_step_unoptimized=unoptimized,
    achieved_tflops=_sig(achieved / 1e12) if achieved else None,
    peak_bf16_tflops=peak / 1e12 if peak else None,
    mfu=round(perf.mfu(flops_used, step_s, peak), 4) if peak and flops_used else None,
    mfu_note=note,
    device_memory=_device_memory(device),
    compiled_memory_mib=perf.memory_stats(compiled),
    loss=loss,
    loss_finite=math.isfinite(loss),
  )
  return row


def check_export(
  size: str, *, batch: int = 0, repeats: int = 5, extra: tuple[str, ...] = ()
) -> dict:
  """sslax.export's stablehlo format of MODELS[EXPORT_FROM]'s backbone (random init), lowered for
  cpu and cuda, loaded and run on the default device, checked against the backbone applied
  directly on the same raw images."""
  config, _ = model_config(EXPORT_FROM, size, batch, extra)
  device = jax.devices()[0]
  size_px, channels = config.dataset.image_size, config.dataset.channels
  backbone = models.make_backbone(config.model, config.dtype)
  x = jnp.zeros((1, size_px, size_px, channels), jnp.float32)
  variables = jax.jit(lambda k: backbone.init(k, x, train=False))(jax.random.key(0))
  spec = export.preprocessing_spec(
    size_px,
    channels,
    normalize=config.augment.normalize,
    crop_fraction=config.eval.crop_fraction,
  )
  platforms = ("cpu", "cuda")
  images = np.random.default_rng(0).integers(
    0, 256, size=(config.batch_size, size_px, size_px, channels), dtype=np.uint8
  )
  with tempfile.TemporaryDirectory() as out:
    t0 = time.perf_counter()
    export.export_encoder(
      out,
      "stablehlo",
      model=config.model.to_dict(),
      dtype=config.dtype,
      variables=variables,
      preprocessing=spec,
      platforms=platforms,
    )
    export_s = time.perf_counter() - t0
    nbytes = os.path.getsize(os.path.join(out, export.EXPORTED_FILE))
    encoder = export.load_encoder(out)
    t0 = time.perf_counter()
    features = encoder(images)  # first call: compiles the deserialized module for this device
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
      encoder(images)
    call_s = (time.perf_counter() - t0) / repeats
  apply = lambda v, im: backbone.apply(v, export.preprocess(im, spec), train=False)
  direct = np.asarray(jax.jit(apply)(variables, images), np.float32)
  diff = float(np.max(np.abs(features - direct)))
  scale = float(np.max(np.abs(direct))) or 1.0
  return {
    "model": "export",
    "what": f"stablehlo export of the {EXPORT_FROM} backbone ({MODELS[EXPORT_FROM].config})",
    "platforms": list(platforms),
    "ran_on": device.platform,
    "platform": device.platform,
    "device_kind": device.device_kind,
    "dtype": config.dtype,
    "batch_size": int(images.shape[0]),
    "image_size": size_px,
    "feature_dim": int(features.shape[-1]),
    "export_s": round(export_s, 2),
    "exported_mb": round(nbytes / 2**20, 2),
    "first_call_s": round(first_s, 2),
    "call_s": _sig(call_s),
    # uint8 numpy in, float32 numpy out: host <-> device copies included, as a user calls it.
    "images_per_s": round(images.shape[0] / call_s, 1),
    "max_abs_diff_vs_direct": diff,
    "max_abs_direct": scale,
    # bf16 compute: the exported and the directly jitted program may fuse differently.
    "matches_direct": bool(diff <= 0.05 * scale),
    "device_memory": _device_memory(device),
  }


def run_one(
  name: str, size: str, *, warmup: int, steps: int, batch: int = 0, extra: tuple[str, ...] = ()
) -> dict:
  """One row; an exception becomes the row's error."""
  t0 = time.perf_counter()
  try:
    if name == "export":
      row = check_export(size, batch=batch, extra=extra)
    else:
      row = measure_model(name, size, warmup=warmup, steps=steps, batch=batch, extra=extra)
  except Exception as e:  # noqa: BLE001 -- one failing model must not lose the others
    row = {"model": name, "error": f"{type(e).__name__}: {str(e)[:2000]}"}
  row["wall_s"] = round(time.perf_counter() - t0, 1)
  return row


def _child(name: str, args, timeout: float) -> dict:
  """run_one in a fresh process, killed after `timeout` seconds."""
  cmd = [sys.executable, os.path.abspath(__file__), "--_child", name, "--size", args.size]
  cmd += ["--warmup", str(args.warmup), "--steps", str(args.steps), "--batch", str(args.batch)]
  cmd += [f"--override={o}" for o in args.override]
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(
      cmd, check=False, cwd=REPO, env=_child_env(), capture_output=True, text=True, timeout=timeout
    )
  except subprocess.TimeoutExpired:
    return {
      "model": name,
      "error": f"killed after {timeout:.0f} s to keep within --time_budget_s",
      "wall_s": round(time.perf_counter() - t0, 1),
    }
  lines = [line for line in proc.stdout.splitlines() if line.startswith(ROW_PREFIX)]
  if proc.returncode == 0 and lines:
    return json.loads(lines[-1][len(ROW_PREFIX) :])
  tail = [line for line in proc.stderr.splitlines() if line.strip()][-5:]
  return {
    "model": name,
    "error": f"child exited with {proc.returncode}: " + " | ".join(tail)[-2000:],
    "wall_s": round(time.perf_counter() - t0, 1),
  }


def _child_env() -> dict:
  env = dict(os.environ)
  # jax preallocates 75% of GPU memory by default; the child is alone on the GPU (the parent
  # never opens it), so let the largest batches use 90% of it.
  env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
  return env


def machine(rows=(), *, open_device: bool = True, load_at_start: float | None = None) -> dict:
  """The host and the device. open_device=False (children did the work): the device's name comes
  from the rows, so this process never initialises the GPU (it would hold memory)."""
  if open_device:
    device = jax.devices()[0]
    where = {"platform": device.platform, "device_kind": device.device_kind}
    where["devices_visible"] = jax.device_count()
  else:
    seen = [r for r in rows if r.get("device_kind")]
    where = {k: seen[0][k] if seen else None for k in ("platform", "device_kind")}
  try:
    with open("/proc/cpuinfo") as f:
      cpus = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
  except OSError:
    cpus = []
  return {
    **where,
    "devices_used": 1,
    "packages": _versions("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax"),
    "cpu": cpus[0] if cpus else platform.machine(),
    "cpu_count": os.cpu_count(),
    "load_average_at_start": load_at_start,
    "load_average_at_end": round(os.getloadavg()[0], 1),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def _versions(*names: str) -> dict:
  found = {}
  for name in names:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return found


def _parse(argv):
  p = argparse.ArgumentParser(
    description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--size", choices=("tiny", "full"), default="full")
  p.add_argument("--only", default=",".join(ALL), help=f"comma-separated, from {','.join(ALL)}")
  p.add_argument(
    "--out",
    default="",
    help="default: benchmarks/results/device_check.json (--size tiny: device_check_tiny.json, so "
    "a smoke run never overwrites GPU figures)",
  )
  p.add_argument(
    "--time_budget_s",
    type=float,
    default=540.0,  # an H200 needed 470 s: 95-123 s per model (one process each), 29 s export
    help="whole run; a model that would overrun it is killed, later ones skipped",
  )
  p.add_argument("--steps", type=int, default=0, help="timed steps (default: tiny 3, full 10)")
  p.add_argument("--warmup", type=int, default=-1, help="untimed steps (default: tiny 1, full 3)")
  p.add_argument("--batch", type=int, default=0, help="per-device batch of every model")
  p.add_argument(
    "--override",
    action="append",
    default=[],
    help="KEY=VALUE applied to every model's config after its own (repeatable), e.g. "
    "model.attention=cudnn",
  )
  p.add_argument(
    "--in_process", action="store_true", help="no child processes (tests; peak memory cumulates)"
  )
  p.add_argument("--_child", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.argv = list(argv)
  if not args.out:
    name = "device_check.json" if args.size == "full" else "device_check_tiny.json"
    args.out = os.path.join(REPO, "benchmarks", "results", name)
  names = [n.strip() for n in args.only.split(",") if n.strip()]
  unknown = sorted(set(names) - set(ALL))
  if unknown or not names:
    p.error(f"--only: unknown {unknown}; choose from {','.join(ALL)}")
  args.names = [n for n in ALL if n in names]
  warmup, steps = STEPS[args.size]
  args.warmup = warmup if args.warmup < 0 else args.warmup
  args.steps = args.steps or steps
  if args.steps < 1 or args.batch < 0:
    p.error("--steps must be >= 1 and --batch >= 0")
  return args


def main(argv=None) -> int:
  args = _parse(sys.argv[1:] if argv is None else argv)
  # Compile time is a figure here: a persistent cache hit would hide it.
  cache = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    if args._child:
      _hide_gpus_from_tf()
      row = run_one(
        args._child,
        args.size,
        warmup=args.warmup,
        steps=args.steps,
        batch=args.batch,
        extra=tuple(args.override),
      )
      print(ROW_PREFIX + json.dumps(row), flush=True)
      return 0
    return _run_all(args)
  finally:
    jax.config.update("jax_enable_compilation_cache", cache)


def _hide_gpus_from_tf() -> None:
  """sslax.data's input pipeline must not hold GPU memory here. Nothing to hide where TensorFlow
  is not installed (a GPU image with jax alone): the check builds its steps data-free and never
  imports it."""
  if importlib.util.find_spec("tensorflow") is None:
    return
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")


def _run_all(args) -> int:
  start, load = time.perf_counter(), round(os.getloadavg()[0], 1)
  if args.in_process:
    _hide_gpus_from_tf()
  result = {
    "check": "benchmarks/device_check.py",
    "command": "python benchmarks/device_check.py " + " ".join(args.argv),
    "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "sslax": __version__,
    "size": args.size,
    "time_budget_s": args.time_budget_s,
    "isolated": not args.in_process,
    "machine": None,  # filled in at the end (see `machine`)
    "rows": [],
  }
  reserve = RESERVE_S[args.size]
  for i, name in enumerate(args.names):
    left = args.time_budget_s - (time.perf_counter() - start)
    allowed = left - reserve * (len(args.names) - i - 1)
    if allowed < reserve:  # too little to start a process and compile: say so, do not try
      row = {"model": name, "error": f"skipped: {max(left, 0):.0f} s of --time_budget_s left"}
    elif args.in_process:
      row = run_one(
        name,
        args.size,
        warmup=args.warmup,
        steps=args.steps,
        batch=args.batch,
        extra=tuple(args.override),
      )
    else:
      row = _child(name, args, allowed)
    result["rows"].append(row)
    print(_summary(row), flush=True)
  result["total_s"] = round(time.perf_counter() - start, 1)
  result["machine"] = machine(result["rows"], open_device=args.in_process, load_at_start=load)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  print(f"{result['total_s']:.0f} s in all; wrote {args.out}", flush=True)
  return 0 if all("error" not in r for r in result["rows"]) else 1


def _summary(row: dict) -> str:
  if "error" in row:
    return f"{row['model']:7s} ERROR {row['error'][:300]}"
  if row["model"] == "export":
    return (
      f"export  {row['platforms']} -> ran on {row['ran_on']}: {row['images_per_s']:,.0f} img/s "
      f"(batch {row['batch_size']}), export {row['export_s']} s, max |diff| vs direct "
      f"{row['max_abs_diff_vs_direct']:.3g} ({'ok' if row['matches_direct'] else 'MISMATCH'})"
    )
  mfu = "n/a" if row["mfu"] is None else f"{row['mfu']:.1%}"
  mem = row["device_memory"] or {}
  peak = f"{mem['peak_gib']:.1f} GiB" if mem else "n/a"
  compiled = (row["compiled_memory_mib"] or {}).get("peak_mb")
  return (
    f"{row['model']:7s} batch {row['batch_size']} x {len(row['views'])} views: "
    f"{row['images_per_s']:,.1f} img/s, {row['step_s'] * 1e3:.1f} ms/step, "
    f"{(row['flops_per_step'] or 0) / 1e9:.3g} GFLOP/step, MFU {mfu}, compile "
    f"{row['compile_s']:.1f} s, device peak {peak}, XLA step peak {compiled} MiB"
  )


if __name__ == "__main__":
  sys.exit(main())
