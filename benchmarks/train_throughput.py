r"""Train-step and input-pipeline throughput for a config; prints and writes JSON.

  python benchmarks/train_throughput.py --config configs/simclr_fashion_mnist.py \
      [--config.batch_size=128] [--steps 20] [--out benchmarks/results/throughput.json]

Measures, on whatever devices are visible:
  - compile time of the train step (lower + compile, from jax's AOT API);
  - steady-state train-step images/s on a fixed device batch (input excluded);
  - input pipeline images/s alone (tf.data, augmentation included);
  - peak/temp memory of the compiled step from XLA's memory analysis.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed train steps (after 2 warm-up steps).")
_INPUT_BATCHES = flags.DEFINE_integer("input_batches", 20, "Timed input-pipeline batches.")
_OUT = flags.DEFINE_string("out", "benchmarks/results/train_throughput.json", "JSON output path.")


def main(argv):
  del argv
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  from sslax import sharding, train
  from sslax.data import pipeline

  config = _CONFIG.value
  s = train.setup(config)
  state = train.init_state(s)
  step_fn = train.make_train_step(s)

  ds = pipeline.train_dataset(s.train_source, s.method.views(), global_batch=config.batch_size,
                              seed=config.seed, process_index=jax.process_index(),
                              process_count=jax.process_count())
  it = ds.as_numpy_iterator()
  first = next(it)
  # Input pipeline alone.
  t0 = time.perf_counter()
  for _ in range(_INPUT_BATCHES.value):
    next(it)
  input_ips = _INPUT_BATCHES.value * config.batch_size / (time.perf_counter() - t0)

  batch = sharding.make_global_batch(s.mesh, first)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  for _ in range(2):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - t0) / _STEPS.value

  views = len(s.method.views())
  result = {
      "config": {"method": config.method, "model": config.model.to_dict(), "dtype": config.dtype,
                 "batch_size": config.batch_size, "image_size": config.dataset.image_size},
      "devices": [str(d) for d in jax.devices()], "machine": platform.processor() or platform.machine(),
      "cpu_count": os.cpu_count(),
      "compile_s": round(compile_s, 2),
      "step_s": round(step_s, 4),
      "train_images_per_s": round(config.batch_size / step_s, 1),
      "train_views_per_s": round(views * config.batch_size / step_s, 1),
      "input_images_per_s": round(input_ips, 1),
      "temp_memory_mb": round(getattr(mem, "temp_size_in_bytes", 0) / 2**20, 1) if mem else None,
      "argument_memory_mb": round(getattr(mem, "argument_size_in_bytes", 0) / 2**20, 1) if mem else None,
      "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }
  print(json.dumps(result, indent=2))
  if _OUT.value:
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  app.run(main)
