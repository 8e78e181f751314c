r"""Input pipeline at pod scale: decode + augment throughput from JPEG record shards, and the
start-up cost of a 10-million-example index.

  python benchmarks/input_pipeline.py [--images 384] [--seconds 20] [--out benchmarks/results]

1. Throughput. Generates --images synthetic photos (JPEG, 500 x 375 like an average ImageNet
   image, quality 90), converts them to record shards with `python -m sslax.data.shards`, and
   runs the training stream (`sslax.data.pipeline.train_dataset`) of the SimCLR (two 224 px
   views) and DINO (2 x 224 + 10 x 96 multi-crop) ImageNet recipes from configs/*_tpu.py over
   them with tf.data limited to 1 thread and to every core. For comparison, the same views from
   the images already decoded in memory (today's in-memory path: augmentation only) and decode
   alone. Images/s per core against what one accelerator step consumes (ResNet-50 SimCLR at
   ~2,000 img/s per chip, the issue's yardstick) gives the CPU cores each accelerator needs.
2. Scale. Builds a 10,000,000-example shard index (shard entries that all point at the one
   real shard of step 1, so every index is readable) and a 10,000-example one, and measures
   for each: the time from opening the source to the first batch of a run resumed at step
   10^6, the records read, and the memory the process gained (RSS).

Writes input_pipeline.json and input_pipeline.md to --out. Timings depend on the CPU: the
record names it (`lscpu`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

ACCELERATOR_IMG_PER_S = 2000  # ResNet-50 SimCLR, one chip (the yardstick)
RECIPES = {"simclr": "configs/simclr_tpu.py", "dino": "configs/dino_vits16_tpu.py"}


def cpu_name() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
  for line in out.splitlines():
    if line.startswith("Model name:"):
      return line.split(":", 1)[1].strip()
  return "unknown"


def synthetic_photo(rng: np.random.Generator, h=375, w=500) -> bytes:
  """A smooth random colour field plus texture: JPEG-compresses like a photo (~60-120 KB)."""
  from PIL import Image

  coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
  base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float32)
  texture = rng.normal(0, 18, (h, w, 3))
  pixels = np.clip(base + texture, 0, 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def make_shards(root: str, n: int) -> tuple[str, float]:
  from sslax.data import shards

  rng = np.random.default_rng(0)
  sizes = []
  for i in range(n):
    folder = os.path.join(root, "images", f"class{i % 10}")
    os.makedirs(folder, exist_ok=True)
    data = synthetic_photo(rng)
    sizes.append(len(data))
    with open(os.path.join(folder, f"{i}.jpg"), "wb") as f:
      f.write(data)
  shards.convert("image_folder", os.path.join(root, "images"), os.path.join(root, "shards"))
  return os.path.join(root, "shards"), float(np.mean(sizes))


def recipe_views(name: str):
  from sslax import aot, setup

  config, _ = aot.load_config_file(os.path.join(REPO, RECIPES[name]))
  import jax

  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
  return setup.build_method(config, mesh, data_free=True).views()


def throughput(source, views, *, threads: int, seconds: float, batch: int = 32) -> float:
  """Images/s of the training stream with tf.data limited to `threads` threads."""
  import tensorflow as tf

  from sslax.data import pipeline

  ds = pipeline.train_dataset(source, views, global_batch=batch, seed=0)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  it = ds.with_options(options).as_numpy_iterator()
  next(it)  # warm-up: graph building, first reads
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    next(it)
    n += batch
  return n / (time.perf_counter() - t0)


def decode_only(source, *, threads: int, seconds: float) -> float:
  import tensorflow as tf

  ds = tf.data.Dataset.range(2**40).map(
    lambda i: source.read_tf(i % len(source))[0], num_parallel_calls=threads
  )
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  it = ds.with_options(options).as_numpy_iterator()
  next(it)
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    next(it)
    n += 1
  return n / (time.perf_counter() - t0)


def rss_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fake_index(root: str, real_dir: str, num_examples: int) -> str:
  """A shard dataset of about num_examples examples whose shard entries are symlinks to the
  first real shard of real_dir."""
  from sslax.data.sources import shards as fmt

  meta = fmt.read_metadata(real_dir)
  first = meta["splits"]["train"]["shards"][0]
  real = os.path.join(real_dir, first["file"])
  per_shard = int(first["num_examples"])
  num_shards = -(-num_examples // per_shard)
  os.makedirs(root, exist_ok=True)
  entries = []
  for k in range(num_shards):
    name = fmt.shard_file_name("train", k)
    os.symlink(real, os.path.join(root, name))
    entries.append({"file": name, "num_examples": per_shard})
  n = num_shards * per_shard
  labels = (np.arange(n) % 10).astype(np.int32)
  with open(os.path.join(root, fmt.labels_file_name("train")), "wb") as f:
    np.save(f, labels, allow_pickle=False)
  meta = dict(meta)
  meta["splits"] = {
    "train": {
      "num_examples": n,
      "features": ["image", "label"],
      "labels_file": fmt.labels_file_name("train"),
      "shards": entries,
      "made": {"from": "benchmarks/input_pipeline.py (symlinked index)"},
    }
  }
  with open(os.path.join(root, fmt.METADATA_FILE), "w") as f:
    json.dump(meta, f)
  return root


def startup(data_dir: str, views) -> dict:
  """Opening the source and reaching the first batch of a run resumed at step 10^6, measured in
  a fresh subprocess (clean memory accounting)."""
  code = f"""
import json, time, sys
sys.path.insert(0, {REPO!r})
from benchmarks.input_pipeline import rss_mb
import tensorflow as tf
from sslax.data import pipeline, sources
from sslax.data.augment import ViewSpec
views = tuple(ViewSpec(**v) for v in json.loads({json.dumps(json.dumps(views))}))
before = rss_mb()
t0 = time.perf_counter()
src = sources.get_source("shards", "train", data_dir={data_dir!r})
t_open = time.perf_counter() - t0
ds = pipeline.train_dataset(src, views, global_batch=256, seed=0, start_step=10**6)
next(ds.as_numpy_iterator())
print(json.dumps({{"examples": len(src), "open_s": t_open,
  "first_batch_s": time.perf_counter() - t0, "records_read": src.reads,
  "rss_gain_mb": rss_mb() - before}}))
"""
  out = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=384)
  parser.add_argument("--seconds", type=float, default=20.0)
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
  args = parser.parse_args()

  import dataclasses

  from sslax.data import sources
  from sslax.data.sources.base import ArraySource

  cores = os.cpu_count() or 1
  load_before = os.getloadavg()[0]  # other jobs on the machine distort the all-cores figure
  tmp = tempfile.mkdtemp(prefix="sslax_input_")
  try:
    data_dir, mean_bytes = make_shards(tmp, args.images)
    src = sources.get_source("shards", "train", data_dir=data_dir)
    decoded = np.stack([src.read_image(i) for i in range(len(src))])
    memory = ArraySource(
      images=decoded, labels=src.labels, num_classes=10, class_names=src.class_names, name="mem"
    )
    rows = []
    dec1 = decode_only(src, threads=1, seconds=args.seconds / 2)
    for name in RECIPES:
      views = recipe_views(name)
      row = {"recipe": name, "views": f"{len(views)} ({', '.join(str(v.size) for v in views)})"}
      row["shards_1_thread"] = throughput(src, views, threads=1, seconds=args.seconds)
      row[f"shards_{cores}_threads"] = throughput(src, views, threads=cores, seconds=args.seconds)
      row["memory_1_thread"] = throughput(memory, views, threads=1, seconds=args.seconds)
      # One tf.data thread with intra-op parallelism 1 keeps one core busy: its rate is the
      # per-core rate (the all-cores figure also depends on what else runs on the machine).
      row["per_core"] = row["shards_1_thread"]
      row["cores_per_accelerator"] = ACCELERATOR_IMG_PER_S / row["per_core"]
      rows.append(row)
      print(json.dumps(row), flush=True)

    simclr_views = [dataclasses.asdict(v) for v in recipe_views("simclr")]
    for v in simclr_views:
      for k, val in v.items():
        if isinstance(val, tuple):
          v[k] = list(val)
    scale = []
    for size in (10_000, 10_000_000):
      index = fake_index(os.path.join(tmp, f"index_{size}"), data_dir, size)
      result = startup(index, simclr_views)
      scale.append(result)
      print(json.dumps(result), flush=True)

    record = {
      "cpu": cpu_name(),
      "cores": cores,
      "load_average_before": load_before,
      "images": args.images,
      "mean_jpeg_bytes": mean_bytes,
      "decode_only_1_thread": dec1,
      "accelerator_img_per_s": ACCELERATOR_IMG_PER_S,
      "throughput": rows,
      "startup": scale,
    }
  finally:
    shutil.rmtree(tmp, ignore_errors=True)

  write(record, args.out)


def write(record: dict, out: str) -> None:
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "input_pipeline.json"), "w") as f:
    json.dump(record, f, indent=1)
  cores, rows, scale = record["cores"], record["throughput"], record["startup"]
  lines = [
    f"CPU: {record['cpu']}, {cores} cores; {record['images']} synthetic 500x375 JPEGs "
    f"(mean {record['mean_jpeg_bytes'] / 1024:.0f} KiB) in record shards; decode alone "
    f"{record['decode_only_1_thread']:.0f} img/s on 1 thread. Load average before the run: "
    f"{record['load_average_before']:.1f}.",
    "",
    "| recipe | views | shards, 1 thread (= per core) | shards, all cores | in memory (augment "
    f"only), 1 thread | cores per accelerator at {record['accelerator_img_per_s']} img/s |",
    "|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
      f"| {r['recipe']} | {r['views']} | {r['shards_1_thread']:.0f} img/s | "
      f"{r[f'shards_{cores}_threads']:.0f} img/s | {r['memory_1_thread']:.0f} img/s | "
      f"{r['cores_per_accelerator']:.0f} |"
    )
  lines += [
    "",
    "| index size | open | first batch at step 10^6 | records read | memory gained |",
    "|---|---|---|---|---|",
  ]
  for s in scale:
    lines.append(
      f"| {s['examples']:,} | {s['open_s']:.2f} s | {s['first_batch_s']:.2f} s | "
      f"{s['records_read']} | {s['rss_gain_mb']:.0f} MiB |"
    )
  with open(os.path.join(out, "input_pipeline.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
