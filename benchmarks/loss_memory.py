r"""Per-device peak memory of the image-text losses (loss + gradient) as the global batch grows.

  python benchmarks/loss_memory.py [--local_batch 512] [--dim 256] [--out benchmarks/results]

Compiles `jit(value_and_grad(loss))` of CLIP's and SigLIP's losses, full-gather and chunked
(ring exchange), under `jax.shard_map` on 2, 4, 8 and 16 fake CPU devices with a fixed
per-device batch b, so the global batch B = b x devices grows 8x, and reads XLA's memory
analysis of the compiled program (`.memory_analysis()`: per-device temp buffers, i.e. the
peak working memory beyond the inputs and outputs). A second sweep keeps 8 devices and grows
b. Writes loss_memory.json and loss_memory.md to --out. No accelerator needed: the numbers are
XLA:CPU's buffer assignment of the same program TPUs/GPUs run (their fusion choices differ).
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=16"
).strip()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sslax import sharding  # noqa: E402
from sslax.losses.clip import clip_loss  # noqa: E402
from sslax.losses.siglip import siglip_loss  # noqa: E402

# From 2 devices on: one device has no ring, so no receive buffers (a constant, see the md).
DEVICE_COUNTS = (2, 4, 8, 16)

LOSSES = {
  "clip full-gather": lambda x, y, s, b, ax: clip_loss(x, y, s, axis_name=ax)[0],
  "clip chunked (ring)": lambda x, y, s, b, ax: clip_loss(x, y, s, axis_name=ax, chunked=True)[0],
  "siglip full-gather": lambda x, y, s, b, ax: siglip_loss(x, y, s, b, axis_name=ax)[0],
  "siglip chunked (ring)": lambda x, y, s, b, ax: siglip_loss(
    x, y, s, b, axis_name=ax, chunked=True
  )[0],
}


def measure(loss, num_devices: int, local_batch: int, dim: int) -> dict:
  mesh = sharding.make_mesh({"data": -1}, jax.devices()[:num_devices])
  batch = P(sharding.BATCH_AXES)
  fn = jax.shard_map(
    lambda x, y, s, b: loss(x, y, s, b, sharding.BATCH_AXES),
    mesh=mesh,
    in_specs=(batch, batch, P(), P()),
    out_specs=P(),
  )
  step = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 3)))
  big_b = local_batch * num_devices
  shaped = lambda shape, sh: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sh)
  emb = shaped((big_b, dim), sharding.batch_sharding(mesh))
  scalar = shaped((), sharding.replicated(mesh))
  mem = step.lower(emb, emb, scalar, scalar).compile().memory_analysis()
  return {
    "devices": num_devices,
    "local_batch": local_batch,
    "global_batch": big_b,
    "dim": dim,
    "temp_bytes": int(mem.temp_size_in_bytes),
    "argument_bytes": int(mem.argument_size_in_bytes),
    "output_bytes": int(mem.output_size_in_bytes),
  }


def _mib(n):
  return f"{n / 2**20:.2f}"


def markdown(rows, key: str) -> str:
  sizes = sorted({r[key] for r in rows})
  header = "global batch B" if key == "global_batch" else "per-device batch b"
  lines = [
    "| loss | " + " | ".join(f"{header}={s}" for s in sizes) + " | growth |",
    "|---|" + "---|" * (len(sizes) + 1),
  ]
  for name in LOSSES:
    got = {r[key]: r["temp_bytes"] for r in rows if r["loss"] == name}
    cells = [_mib(got[s]) for s in sizes]
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {got[sizes[-1]] / got[sizes[0]]:.1f}x |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--local_batch", type=int, default=512)
  parser.add_argument("--dim", type=int, default=256)
  parser.add_argument("--out", default="benchmarks/results")
  args = parser.parse_args()
  scale_out, scale_up = [], []
  for name, loss in LOSSES.items():
    for n in DEVICE_COUNTS:
      scale_out.append(dict(measure(loss, n, args.local_batch, args.dim), loss=name))
      print(json.dumps(scale_out[-1]), flush=True)
    for b in (
      args.local_batch // 8,
      args.local_batch // 4,
      args.local_batch // 2,
      args.local_batch,
    ):
      scale_up.append(dict(measure(loss, 8, b, args.dim), loss=name))
      print(json.dumps(scale_up[-1]), flush=True)
  meta = {
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "dtype": "float32",
    "what": "XLA temp bytes per "
    "device of jit(value_and_grad(loss)), from compiled.memory_analysis()",
  }
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "loss_memory.json"), "w") as f:
    json.dump(
      {"meta": meta, "fixed_local_batch": scale_out, "fixed_devices": scale_up}, f, indent=2
    )
  text = (
    f"Per-device temp memory (MiB) of loss + gradient, embeddings [b, {args.dim}] float32 "
    f"({meta['backend']}, jax {meta['jax']}).\n\n"
    f"Global batch grows 8x with the device count ({', '.join(map(str, DEVICE_COUNTS))} devices, b = "
    f"{args.local_batch} each):\n\n"
    + markdown(scale_out, "global_batch")
    + "\nGlobal batch grows 8x on 8 devices (b grows too):\n\n"
    + markdown(scale_up, "local_batch")
  )
  with open(os.path.join(args.out, "loss_memory.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  main()
