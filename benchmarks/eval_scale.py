r"""Evaluation at ImageNet scale: the row-sharded kNN and linear probe (sslax issue 17).

  python benchmarks/eval_scale.py            # both parts, writes benchmarks/results/eval_scale.*
  python benchmarks/eval_scale.py --skip_aot # only the CPU part

1. CPU, 8 fake devices: a synthetic bank (default 131,072 x 2048 float32 = 1 GiB, 100 classes, rows
   sharded over the 8 devices, made on the devices: never on one host) and a few thousand
   queries; times the on-device kNN (k = 20, 200) and a few epochs of the fast linear probe,
   then extrapolates both linearly in bank rows x queries (kNN) and rows (probe) to ImageNet
   (1,281,167 x 2048 train, 50,000 queries). The 8 "devices" share this machine's CPU cores,
   so the times are those of one CPU doing 8 devices' work: an upper bound of a CPU host, not
   a prediction for accelerators.
2. TPU, ahead of time (libtpu, no TPU attached; as sslax/aot.py): the kNN step (top-k part and
   vote) at ImageNet size compiled for a topology (default v5e:4x4): per-chip memory from XLA's
   memory analysis, FLOPs / bytes / collectives from its cost analysis, and a roofline lower
   bound of the time per 50,000 queries. The roofline leaves out top_k's own cost beyond its
   memory traffic (exact top-k is sort-like on TPU) and launch overheads: read it as "cannot
   be faster than".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
RESULTS = os.path.join(REPO, "benchmarks", "results")
IMAGENET_TRAIN, IMAGENET_VAL = 1_281_167, 50_000


def _cpu_name() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in out.splitlines():
      if line.startswith("Model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def synthetic_bank(mesh, rows: int, dim: int, num_classes: int, seed: int):
  """A FeatureBank of `rows` examples, generated sharded on the mesh: class centres (the same
  for every seed) + noise (from `seed`)."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding

  from sslax.features import ROWS, FeatureBank

  where = NamedSharding(mesh, ROWS)

  @jax.jit
  def make(key):
    k2, k3 = jax.random.split(key)
    centres = jax.random.normal(jax.random.key(1234), (num_classes, dim))
    labels = jax.random.randint(k2, (rows,), 0, num_classes)
    noise = jax.random.normal(k3, (rows, dim)) * 2.0
    x = jax.lax.with_sharding_constraint(centres[labels] + noise, where)
    return x, labels.astype(jnp.int32), jnp.arange(rows, dtype=jnp.int32)

  make = jax.jit(make, out_shardings=(where, where, where))
  x, y, i = make(jax.random.key(seed))
  return FeatureBank(x, y, i, num_examples=rows)


def cpu_part(args) -> dict:
  import jax

  from sslax import sharding
  from sslax.evaluation.knn import knn_accuracy_sharded
  from sslax.evaluation.linear import linear_probe_sharded

  mesh = sharding.make_mesh({"data": -1}, devices=jax.devices()[: args.devices])
  train = synthetic_bank(mesh, args.rows, args.dim, args.classes, 0)
  test = synthetic_bank(mesh, args.queries, args.dim, args.classes, 1)
  jax.block_until_ready((train.features, test.features))
  per_device_mib = train.features.addressable_shards[0].data.nbytes / 2**20

  # kNN: a warm-up call on one step's worth of queries compiles the per-step programs (the
  # timed call recompiles only for the larger query array: seconds, included).
  knn = lambda q: knn_accuracy_sharded(
    train, q, num_classes=args.classes, ks=(20, 200), batch_size=args.knn_batch
  )
  t0 = time.perf_counter()
  knn(synthetic_bank(mesh, args.knn_batch, args.dim, args.classes, 2))
  first_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  acc = knn(test)
  knn_s = time.perf_counter() - t0

  probe = lambda epochs: linear_probe_sharded(
    train,
    test,
    num_classes=args.classes,
    epochs=epochs,
    batch_size=1024,
    learning_rate=1e-3,
    weight_decay=1e-4,
  )
  t0 = time.perf_counter()
  probe(1)  # compiles the epoch, standardises on the host
  one_epoch_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  res = probe(1 + args.probe_epochs)
  probe_s = time.perf_counter() - t0
  per_epoch_s = (probe_s - one_epoch_s) / args.probe_epochs  # compiled, beyond the setup
  setup_s = max(probe_s - (1 + args.probe_epochs) * per_epoch_s, 0.0)
  scale_knn = (IMAGENET_TRAIN * IMAGENET_VAL) / (args.rows * args.queries)
  scale_rows = IMAGENET_TRAIN / args.rows
  return {
    "devices": args.devices,
    "bank_rows": args.rows,
    "dim": args.dim,
    "dtype": "float32",
    "classes": args.classes,
    "queries": args.queries,
    "bank_mib_per_device": round(per_device_mib, 1),
    "knn_batch": args.knn_batch,
    "knn_first_call_s": round(first_s, 2),
    "knn_s": round(knn_s, 2),
    "knn_accuracy": acc,
    "knn_queries_per_s": round(args.queries / knn_s, 1),
    "probe_epochs": 1 + args.probe_epochs,
    "probe_setup_s": round(setup_s, 2),
    "probe_epoch_s": round(per_epoch_s, 2),
    "probe_test_accuracy": res["test_accuracy"],
    "imagenet_extrapolation": {
      "knn_50k_queries_s": round(knn_s * scale_knn, 1),
      "probe_epoch_s": round(per_epoch_s * scale_rows, 1),
      "probe_100_epochs_s": round((setup_s + 100 * per_epoch_s) * scale_rows, 1),
      "how": "linear in bank rows x queries (kNN), in rows (probe); same 8 CPU devices",
    },
  }


def aot_part(args) -> dict:
  """The kNN step at ImageNet size compiled for a TPU topology."""
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P

  from sslax import aot, perf, sharding
  from sslax.evaluation import knn
  from sslax.features import ROWS

  chip = aot.chip_of(args.topology)
  devices = aot.topology_devices(args.topology)
  n = len(devices)
  mesh = sharding.make_mesh({"data": -1}, devices=devices)
  rows = math.ceil(IMAGENET_TRAIN / args.aot_eval_batch) * args.aot_eval_batch
  queries = math.ceil(IMAGENET_VAL / args.aot_eval_batch) * args.aot_eval_batch
  chunk = args.aot_knn_batch // n  # queries per device per step
  kmax = 200
  where, whole = NamedSharding(mesh, ROWS), NamedSharding(mesh, P())
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jax.numpy.float32, sharding=where)
  i32 = lambda *shape: jax.ShapeDtypeStruct(shape, jax.numpy.int32, sharding=where)
  scalar = jax.ShapeDtypeStruct((), jax.numpy.int32, sharding=whole)
  topk, vote = knn._sharded_knn_fns(
    mesh, chunk=chunk, local_k=kmax, kmax=kmax, ks=(20, 200), num_classes=1000
  )
  out = {"topology": args.topology, "chips": n, "chip": chip.name, "bank_rows": rows}
  t0 = time.perf_counter()
  compiled = {
    "topk": topk.lower(
      f32(rows, 2048), i32(rows), i32(rows), f32(queries, 2048), i32(queries), scalar
    ).compile(),
    "vote": vote.lower(
      f32(args.aot_knn_batch, kmax),
      i32(args.aot_knn_batch, kmax),
      jax.ShapeDtypeStruct((), jax.numpy.float32, sharding=whole),
    ).compile(),
  }
  out["compile_s"] = round(time.perf_counter() - t0, 1)
  steps = math.ceil(queries / n / chunk)
  total = {"compute_s": 0.0, "hbm_s": 0.0, "ici_s": 0.0}
  for name, c in compiled.items():
    cost = c.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops, moved = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    found = aot.collectives(c.as_text())
    times = {
      "compute_s": flops / chip.bf16_flops,
      "hbm_s": moved / chip.hbm_bandwidth,
      "ici_s": aot.ici_bytes(found, n) / chip.ici_bandwidth,
    }
    for k in total:
      total[k] += times[k] * steps
    out[name] = {
      "memory_mib": perf.memory_stats(c),
      "flops_per_chip_step": flops,
      "bytes_accessed_per_chip_step": moved,
      "collectives": found,
      "roofline_s_per_step": times,
    }
  out["steps_per_50k_queries"] = steps
  out["queries_per_step"] = args.aot_knn_batch
  out["roofline_s_per_50k_queries"] = {k: round(v, 4) for k, v in total.items()}
  out["lower_bound_s_per_50k_queries"] = round(max(total.values()), 4)
  out["bank_gib_per_chip"] = round(rows * 2048 * 4 / n / 2**30, 3)
  out["hbm_gib"] = chip.hbm_bytes / 2**30
  out["note"] = (
    "features float32 (the bank is normalised into a second float32 copy before the loop, "
    "so the kNN holds 2 x bank_gib_per_chip besides the step's peak); compute at the bf16 "
    "peak (XLA's default precision for float32 matmuls on TPU is one bf16 pass)"
  )
  return out


def markdown(record: dict) -> str:
  c, lines = (
    record.get("cpu"),
    [
      "# Evaluation at scale: row-sharded kNN and linear probe",
      "",
      f"Measured {record['date']} on {record['cpu_name']} ({record['cores']} cores, shared with "
      "other jobs: wall times are inflated by the load). `python benchmarks/eval_scale.py`.",
      "",
    ],
  )
  if c:
    x = c["imagenet_extrapolation"]
    lines += [
      f"## CPU, {c['devices']} fake devices: bank {c['bank_rows']:,} x {c['dim']} "
      f"{c['dtype']} ({c['bank_mib_per_device']} MiB per device), {c['queries']:,} queries, "
      f"{c['classes']} classes",
      "",
      "| step | measured | extrapolated to ImageNet (1.28M x 2048, 50k queries) |",
      "| --- | --- | --- |",
      f"| kNN k=20,200 (batch {c['knn_batch']}) | {c['knn_s']} s ({c['knn_queries_per_s']} "
      f"queries/s; warm-up step with compile {c['knn_first_call_s']} s) | "
      f"{x['knn_50k_queries_s']} s |",
      f"| linear probe, per epoch (batch 1024) | {c['probe_epoch_s']} s (+ {c['probe_setup_s']} "
      f"s standardisation and setup) | {x['probe_epoch_s']} s; 100 epochs "
      f"{x['probe_100_epochs_s']} s |",
      "",
      f"kNN accuracy on the synthetic classes: {c['knn_accuracy']}; probe test accuracy "
      f"{c['probe_test_accuracy']:.4f} (sanity only). Extrapolation: {x['how']}.",
      "",
    ]
  a = record.get("aot")
  if a:
    t = a["roofline_s_per_50k_queries"]
    lines += [
      f"## TPU AOT: the kNN step at ImageNet size on {a['topology']} ({a['chips']} x "
      f"{a['chip']}), compiled on this CPU with libtpu",
      "",
      f"Bank {a['bank_rows']:,} x 2048 float32 rows sharded over the chips "
      f"({a['bank_gib_per_chip']} GiB per chip), {a['queries_per_step']} queries per step, "
      f"{a['steps_per_50k_queries']} steps per 50,000 queries; compile {a['compile_s']} s.",
      "",
      "| program | peak HBM / chip (MiB) | GFLOP / chip / step | collectives / step |",
      "| --- | --- | --- | --- |",
    ]
    for name in ("topk", "vote"):
      p = a[name]
      mem = p["memory_mib"]["peak_mb"] if p["memory_mib"] else "n/a"
      coll = ", ".join(f"{k} x{int(v['count'])}" for k, v in p["collectives"].items()) or "none"
      lines.append(f"| {name} | {mem} | {p['flops_per_chip_step'] / 1e9:.1f} | {coll} |")
    lines += [
      "",
      f"Roofline per 50,000 queries: compute {t['compute_s']} s, HBM {t['hbm_s']} s, ICI "
      f"{t['ici_s']} s: at least {a['lower_bound_s_per_50k_queries']} s. {a['note']}; "
      f"HBM per chip {a['hbm_gib']:.0f} GiB.",
      "",
    ]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--rows", type=int, default=131_072)
  parser.add_argument("--dim", type=int, default=2048)
  parser.add_argument("--classes", type=int, default=100)
  parser.add_argument("--queries", type=int, default=2048)
  parser.add_argument("--knn_batch", type=int, default=1024)
  parser.add_argument("--probe_epochs", type=int, default=2)
  parser.add_argument("--topology", default="v5e:4x4")
  parser.add_argument("--aot_eval_batch", type=int, default=1024)
  parser.add_argument("--aot_knn_batch", type=int, default=1024)
  parser.add_argument("--skip_cpu", action="store_true")
  parser.add_argument("--skip_aot", action="store_true")
  parser.add_argument("--out", default=os.path.join(RESULTS, "eval_scale"))
  args = parser.parse_args(argv)
  # Before jax starts: the fake CPU devices of part 1.
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
  )
  record = {
    "date": time.strftime("%Y-%m-%d"),
    "cpu_name": _cpu_name(),
    "cores": os.cpu_count(),
    "args": vars(args),
  }
  if not args.skip_aot:  # first: the TPU client must be set up before any CPU computation
    record["aot"] = aot_part(args)
    print(json.dumps(record["aot"], indent=1), flush=True)
  if not args.skip_cpu:
    record["cpu"] = cpu_part(args)
    print(json.dumps(record["cpu"], indent=1), flush=True)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out + ".json", "w") as f:
    json.dump(record, f, indent=1)
  with open(args.out + ".md", "w") as f:
    f.write(markdown(record))
  print(markdown(record))
  return 0


if __name__ == "__main__":
  sys.exit(main())
