r"""Train-step throughput, compile time, memory, FLOPs/MFU and input pipeline per config.

  python benchmarks/train_throughput.py                        # SimCLR demo + SimCLR TPU (shrunk), ~3 min on 2 cores
  python benchmarks/train_throughput.py --configs all --steps 10   # every demo and TPU config
  python benchmarks/train_throughput.py --configs configs/byol_fashion_mnist.py --dtype bfloat16

For each config, on whatever devices are visible (one process), it measures:
  - compile time of the train step (jax AOT lower + compile);
  - train-step time on a fixed device batch (input excluded): source images/s and views/s
    (median over --steps timed steps, each synchronised);
  - model FLOPs per step from XLA's cost_analysis() (all devices) and MFU = achieved FLOP/s /
    peak FLOP/s, the peak measured on this machine by a large matmul in the step's dtype
    (sslax.perf); on GPUs/TPUs also against the vendor's data-sheet peak;
  - per-device memory of the compiled step from XLA's memory_analysis() (peak = arguments +
    outputs + temporaries - donated);
  - the input pipeline alone (tf.data, augmentation included): images/s, and its ratio to what
    the train step consumes;
  - the trainer's loop (device prefetch thread + step) over --loop_steps: images/s and the
    fraction of time the step waited for input.

TPU configs (ImageNet, ResNet-50, batch 4096, 224 px) cannot run here: they are SHRUNK to
--tpu_batch images of --tpu_image_size px from the `fake` dataset (the model is unchanged),
and marked so in the table. Writes benchmarks/results/train_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_CONFIGS = "configs/simclr_fashion_mnist.py,configs/simclr_tpu.py"


def _load_config(path: str):
  import importlib.util

  spec = importlib.util.spec_from_file_location("cfg_" + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _median(x):
  import numpy as np

  return float(np.median(np.asarray(x, np.float64)))


def measure_config(path: str, args) -> dict:
  import jax
  from sslax import perf, sharding, train
  from sslax import setup as setup_lib
  from sslax.data import pipeline, prefetch

  config = _load_config(path)
  shrunk = "_tpu" in os.path.basename(path)
  if shrunk:
    config.dataset.name, config.dataset.image_size = "fake", args.tpu_image_size
    config.batch_size = args.tpu_batch
    config.dataset.num_train_examples = 8 * args.tpu_batch
  if args.batch:
    config.batch_size = args.batch
  if args.dtype:
    config.dtype = args.dtype
  config.eval.at_end = False
  # Multi-crop methods read the crop sizes from their own section; only the global size is
  # shrunk here, so say what ran.
  s = setup_lib.build(config)
  state = setup_lib.init_state(s)
  step_fn = train.make_train_step(s)

  ds = pipeline.train_dataset(
    s.train_source,
    s.method.views(),
    global_batch=config.batch_size,
    seed=config.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  it = ds.as_numpy_iterator()
  first = next(it)
  for _ in range(2):  # let tf.data's autotuner settle
    next(it)
  t0 = time.perf_counter()
  for _ in range(args.input_batches):
    next(it)
  input_ips = args.input_batches * config.batch_size / (time.perf_counter() - t0)

  batch = sharding.make_global_batch(s.mesh, first)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  flops = perf.step_flops(compiled)
  memory = perf.memory_stats(compiled)
  for _ in range(args.warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  step_s = _median(times)

  # The loop without prefetch (the trainer before issue #9): read + place each batch in the
  # main thread between steps; then the trainer's loop: prefetch thread + step. Both are
  # synchronised only at the end.
  loop_ips = wait_frac = plain_ips = plain_wait_frac = None
  if args.loop_steps:
    plain_wait, t0 = 0.0, time.perf_counter()
    for _ in range(args.loop_steps):
      t_in = time.perf_counter()
      device_batch = sharding.make_global_batch(s.mesh, next(it))
      plain_wait += time.perf_counter() - t_in
      state, metrics = compiled(state, device_batch)
    jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - t0
    plain_ips, plain_wait_frac = args.loop_steps * config.batch_size / elapsed, plain_wait / elapsed

    with prefetch.DevicePrefetcher(
      it, lambda b: sharding.make_global_batch(s.mesh, b), size=train.PREFETCH_BATCHES
    ) as batches:
      next(batches)
      wait0, t0 = batches.wait_seconds, time.perf_counter()
      for _ in range(args.loop_steps):
        state, metrics = compiled(state, next(batches))
      jax.block_until_ready(metrics)
      elapsed = time.perf_counter() - t0
      loop_ips = args.loop_steps * config.batch_size / elapsed
      wait_frac = (batches.wait_seconds - wait0) / elapsed

  device = jax.devices()[0]
  num_devices = s.mesh.devices.size
  peak = perf.machine_peak_flops(num_devices, config.dtype)
  vendor = perf.vendor_peak_flops(device.device_kind, config.dtype)
  views = s.method.views()
  train_ips = config.batch_size / step_s
  return {
    "config": os.path.relpath(path, ROOT),
    "method": config.method,
    "shrunk": (
      f"fake data, batch {config.batch_size}, {config.dataset.image_size}px" if shrunk else ""
    ),
    "model": config.model.to_dict(),
    "dtype": config.dtype,
    "batch_size": config.batch_size,
    "image_size": config.dataset.image_size,
    "num_views": len(views),
    "view_sizes": [v.size for v in views],
    "devices": num_devices,
    "device_kind": device.device_kind,
    "compile_s": round(compile_s, 2),
    "step_s": round(step_s, 4),
    "step_s_samples": [round(t, 4) for t in times],
    "train_images_per_s": round(train_ips, 1),
    "train_views_per_s": round(len(views) * train_ips, 1),
    "flops_per_step": flops,
    "achieved_tflops": round(flops / step_s / 1e12, 4) if flops else None,
    "peak_tflops_measured": round(peak / 1e12, 4),
    "mfu_measured_peak": round(perf.mfu(flops, step_s, peak), 4) if flops else None,
    "peak_tflops_vendor": vendor and round(vendor * num_devices / 1e12, 1),
    "mfu_vendor_peak": (
      round(perf.mfu(flops, step_s, vendor * num_devices), 4) if flops and vendor else None
    ),
    "memory_per_device": memory,
    "input_images_per_s": round(input_ips, 1),
    "input_over_train": round(input_ips / train_ips, 2),
    "loop_images_per_s": loop_ips and round(loop_ips, 1),
    "loop_input_wait_frac": wait_frac if wait_frac is None else round(wait_frac, 3),
    "loop_no_prefetch_images_per_s": plain_ips and round(plain_ips, 1),
    "loop_no_prefetch_input_wait_frac": plain_wait_frac
    if plain_wait_frac is None
    else round(plain_wait_frac, 3),
  }


def write_markdown(result: dict, path: str) -> None:
  m = result["machine"]
  lines = [
    "# Train-step throughput, MFU, memory and input pipeline",
    "",
    f"{m['devices']} x {m['device_kind']} ({m['platform']}), {m['cpu_count']} CPU cores, "
    f"load average {m['load_average']} at start; {result['timestamp']}. "
    f"Regenerate: `{result['command']}`.",
    "",
    "| config | batch x views | dtype | step s | img/s | views/s | compile s | GFLOP/step | "
    "MFU (measured peak) | MFU (vendor peak) | peak MiB/device | input img/s | input / step | "
    "loop img/s | input wait | loop img/s, no prefetch | input wait, no prefetch |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"
  for r in result["rows"]:
    if "error" in r:
      lines.append(f"| {r['config']} | failed: {r['error'][:150]} |" + " |" * 15)
      continue
    name = r["config"] + (f" (SHRUNK: {r['shrunk']})" if r["shrunk"] else "")
    mem = r["memory_per_device"]["peak_mb"] if r["memory_per_device"] else None
    lines.append(
      f"| {name} | {r['batch_size']} x {r['num_views']} | {r['dtype']} | {r['step_s']:.3f} | "
      f"{r['train_images_per_s']:.0f} | {r['train_views_per_s']:.0f} | {r['compile_s']:.1f} | "
      f"{(r['flops_per_step'] or 0) / 1e9:.1f} | {pct(r['mfu_measured_peak'])} | "
      f"{pct(r['mfu_vendor_peak'])} | {mem if mem is not None else 'n/a'} | "
      f"{r['input_images_per_s']:.0f} | {r['input_over_train']:.1f}x | "
      f"{r['loop_images_per_s'] or 'n/a'} | {pct(r['loop_input_wait_frac'])} | "
      f"{r.get('loop_no_prefetch_images_per_s') or 'n/a'} | "
      f"{pct(r.get('loop_no_prefetch_input_wait_frac'))} |"
    )
  peaks = {r["dtype"]: r["peak_tflops_measured"] for r in result["rows"] if "error" not in r}
  lines += [
    "",
    "Measured peak TFLOP/s by dtype: "
    + ", ".join(f"{d} {p}" for d, p in peaks.items())
    + f" (a {'1024' if m['platform'] == 'cpu' else '8192'}^2 matmul, "
    "sslax.perf.measured_peak_flops). MFU uses XLA's cost-analysis FLOPs of the whole "
    "step (forward, backward, optimizer). 'input / step': pipeline images/s over "
    "train-step images/s (>= 2 keeps the step fed). 'input wait': fraction of the "
    "loop's time spent waiting for a batch (with the trainer's device prefetch thread, "
    "and without it: batches read and placed between steps).",
    "",
  ]
  with open(path, "w") as f:
    f.write("\n".join(lines))


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument(
    "--configs",
    default=DEFAULT_CONFIGS,
    help="Comma-separated config files, or 'all' (every *_fashion_mnist.py and *_tpu.py).",
  )
  p.add_argument("--steps", type=int, default=5, help="Timed train steps (after --warmup).")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--input_batches", type=int, default=20, help="Timed input-pipeline batches.")
  p.add_argument(
    "--loop_steps", type=int, default=10, help="Steps of the prefetching loop (0: skip)."
  )
  p.add_argument("--batch", type=int, default=0, help="Override every config's batch size.")
  p.add_argument("--dtype", default="", help="Override the compute dtype (e.g. bfloat16 on GPU).")
  p.add_argument("--tpu_batch", type=int, default=64, help="Batch of the shrunk TPU configs.")
  p.add_argument(
    "--tpu_image_size", type=int, default=32, help="Image size of the shrunk TPU configs."
  )
  p.add_argument(
    "--out",
    default=os.path.join(ROOT, "benchmarks", "results", "train_throughput"),
    help="Output path without extension (.json and .md are written).",
  )
  args = p.parse_args()

  from sslax import perf

  perf.apply_cpu_xla_defaults()  # as the trainer does (sslax/main.py)
  import jax
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")

  if args.configs == "all":
    paths = sorted(
      glob.glob(os.path.join(ROOT, "configs", "*_fashion_mnist.py"))
      + glob.glob(os.path.join(ROOT, "configs", "*_tpu.py"))
    )
  else:
    paths = [os.path.join(ROOT, c) if not os.path.isabs(c) else c for c in args.configs.split(",")]
  missing = [c for c in paths if not os.path.exists(c)]
  if missing:
    raise SystemExit(f"--configs: no such file(s) {missing}.")

  device = jax.devices()[0]
  result = {
    "machine": {
      "platform": device.platform,
      "device_kind": device.device_kind,
      "devices": jax.device_count(),
      "cpu_count": os.cpu_count(),
      "processor": platform.processor() or platform.machine(),
      "load_average": round(os.getloadavg()[0], 1),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
    },
    "command": "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:]),
    "rows": [],
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }
  for path in paths:
    print(f"== {os.path.relpath(path, ROOT)}", flush=True)
    try:
      row = measure_config(path, args)
    except Exception as e:  # one config failing must not lose the others' rows
      row = {"config": os.path.relpath(path, ROOT), "error": f"{type(e).__name__}: {e}"}
    print(json.dumps(row), flush=True)
    result["rows"].append(row)
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out + ".json", "w") as f:
    json.dump(result, f, indent=2)
  write_markdown(result, args.out + ".md")
  print(open(args.out + ".md").read())


if __name__ == "__main__":
  main()
