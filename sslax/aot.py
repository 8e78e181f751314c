"""Compile a config's train step for a TPU topology on any machine: memory, FLOPs, collectives.

  python -m sslax.aot --config configs/simclr_tpu.py [--topology v5e:4x4] [--config.batch_size=N]

Needs the TPU compiler, libtpu (`bash scripts/setup.sh --test` puts it in `.venv/libtpu`, or
`pip install "jax[tpu]==0.10.2"`); no TPU is attached. The step is built from the config alone
(`setup.build(config, devices=<the topology's devices>, data_free=True)`: a data-free RunInfo, no
dataset opened) with the real shardings, lowered on abstract inputs and compiled by XLA:TPU, as
MaxText's train_compile.py does. XLA's memory analysis then says whether the step fits the
chip's HBM, its cost analysis gives FLOPs and bytes per chip, and the compiled HLO lists the
collectives. From those and the chip's published figures (`CHIPS`) a roofline gives a lower
bound on the step time, hence an upper bound on images/s per chip and MFU.

What the estimate leaves out: the input pipeline (host CPUs decoding JPEGs), the overlap (or
not) of collectives with compute, kernel efficiency below peak, and the host/launch overheads.
Run the printed numbers as "cannot be faster than", not as a prediction of wall time.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import math
import os
import re
import sys
import time

import jax
import ml_collections
import numpy as np

from sslax import config as config_lib, perf, sharding, train
from sslax import setup as setup_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where `scripts/setup.sh --test` installs libtpu (outside site-packages, so that ordinary jax
# processes never try to initialise a TPU client).
LOCAL_LIBTPU = os.path.join(REPO, ".venv", "libtpu", "libtpu", "libtpu.so")


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures (Google Cloud TPU documentation, system architecture pages)."""

  name: str
  bf16_flops: float  # dense peak FLOP/s
  hbm_bytes: float
  hbm_bandwidth: float  # bytes/s
  ici_bandwidth: float  # bytes/s per chip, all links, one direction summed as the docs state
  source: str


CHIPS = {
  # https://cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16, 16 GiB HBM2 at 819 GB/s,
  # ICI 1,600 Gbps per chip.
  "v5e": Chip("TPU v5e", 197e12, 16 * 2**30, 819e9, 1600e9 / 8, "cloud.google.com/tpu/docs/v5e"),
  # https://cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16, 95 GiB HBM2e at 2,765 GB/s,
  # ICI 4,800 Gbps per chip.
  "v5p": Chip("TPU v5p", 459e12, 95 * 2**30, 2765e9, 4800e9 / 8, "cloud.google.com/tpu/docs/v5p"),
  # https://cloud.google.com/tpu/docs/v6e: 918 TFLOP/s bf16, 32 GiB HBM at 1,640 GB/s,
  # ICI 3,584 Gbps per chip.
  "v6e": Chip("TPU v6e", 918e12, 32 * 2**30, 1640e9, 3584e9 / 8, "cloud.google.com/tpu/docs/v6e"),
}

_DTYPE_BYTES = {
  "pred": 1,
  "s8": 1,
  "u8": 1,
  "bf16": 2,
  "f16": 2,
  "s16": 2,
  "u16": 2,
  "f32": 4,
  "s32": 4,
  "u32": 4,
  "f64": 8,
  "s64": 8,
  "u64": 8,
}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_OP_RE = re.compile(r"\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")
_SHAPE_RE = re.compile(r"([a-z]+[0-9]*)\[([0-9,]*)\]")


def chip_of(topology: str) -> Chip:
  generation = topology.split(":")[0]
  if generation not in CHIPS:
    raise ValueError(
      f"Unknown TPU generation {generation!r} in topology {topology!r}; known: {sorted(CHIPS)} "
      "(e.g. v5e:4x4, v5p:2x2x2, v6e:8x8). v4 topologies describe two cores per chip, which "
      "sslax's mesh does not build; use v5p for the 3-D torus."
    )
  return CHIPS[generation]


def collectives(hlo_text: str) -> dict[str, dict[str, float]]:
  """The collectives of an HLO module -> {op: {"count", "bytes"}} (result bytes per chip).

  Reads each instruction's result shape (one array or a tuple of them). An async "-start" op
  other than all-reduce returns (operands, outputs): only the second half counts.
  """
  found: dict[str, dict[str, float]] = {}
  for line in hlo_text.splitlines():
    match = _OP_RE.search(line)
    if not match or " = " not in line[: match.start()]:
      continue
    op, start = match.group(1), match.group(2)
    result = line[line.index(" = ") + 3 : match.start()]
    shapes = _SHAPE_RE.findall(result)
    if start and op != "all-reduce":
      shapes = shapes[len(shapes) // 2 :]
    entry = found.setdefault(op, {"count": 0, "bytes": 0})
    entry["count"] += 1
    entry["bytes"] += sum(
      math.prod(int(d) for d in dims.split(",") if d) * _DTYPE_BYTES.get(dtype, 4)
      for dtype, dims in shapes
    )
  return found


def ici_bytes(found: dict[str, dict[str, float]], num_chips: int) -> float:
  """Bytes each chip sends for the collectives, ring algorithms: all-reduce 2 (n-1)/n of its
  size, all-gather / reduce-scatter / all-to-all (n-1)/n of the full result, permutes 1x."""
  if num_chips <= 1:
    return 0.0
  ring = (num_chips - 1) / num_chips
  factor = {"all-reduce": 2 * ring, "all-gather": ring, "reduce-scatter": ring}
  factor.update({"all-to-all": ring, "collective-permute": 1.0})
  return float(sum(v["bytes"] * factor[op] for op, v in found.items()))


def _config_module(path: str):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config_file(path: str) -> tuple[ml_collections.ConfigDict, str | None]:
  """configs/x.py[:arg] -> (its get_config(arg), its TPU_TOPOLOGY or None)."""
  path, _, arg = path.partition(":")
  module = _config_module(path)
  config = module.get_config(arg) if arg else module.get_config()
  return config, getattr(module, "TPU_TOPOLOGY", None)


def compile_overrides(path: str) -> list[str]:
  """The config file's AOT_OVERRIDES: what a compile check sets in place of the runs a recipe
  reads when it starts (BEiT's tokenizer run, VQ-KD's teacher run), e.g.
  ("--config.beit.random_tokenizer=True",); applied before the command line's overrides."""
  return list(getattr(_config_module(path.partition(":")[0]), "AOT_OVERRIDES", ()))


def topology_devices(topology: str):
  """The compile-only devices of a TPU topology such as "v5e:4x4" (no TPU needed)."""
  installed = importlib.util.find_spec("libtpu") is not None  # pip install "jax[tpu]"
  if not installed and not os.path.isfile(os.environ.get("TPU_LIBRARY_PATH", "")):
    if not os.path.isfile(LOCAL_LIBTPU):
      raise RuntimeError(
        "The TPU compiler (libtpu) is not installed: run `bash scripts/setup.sh --test` (puts it "
        f"in {os.path.dirname(os.path.dirname(LOCAL_LIBTPU))}) or "
        '`pip install "jax[tpu]==0.10.2"`.'
      )
    os.environ["TPU_LIBRARY_PATH"] = LOCAL_LIBTPU
  # The compile-only client warns about the missing TPU host metadata: it needs none.
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  # Compile-only: no TPU is opened, so several processes may load libtpu at once (without this,
  # a second one fails on libtpu's /tmp/libtpu_lockfile, e.g. two compile checks in parallel).
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies  # local: loads the TPU plugin

  chip_of(topology)
  return topologies.get_topology_desc(topology_name=topology, platform="tpu").devices


def abstract_batch(s: setup_lib.Setup) -> dict:
  """The global batch the train step receives, as ShapeDtypeStructs sharded over the batch."""
  b, c = s.config.batch_size, s.run.channels
  where = sharding.batch_sharding(s.mesh)
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=where)
  batch = {
    "views": tuple(spec((b, v.size, v.size, c), np.float32) for v in s.method.views()),
    "label": spec((b,), np.int32),
    "index": spec((b,), np.int32),
  }
  if "text" in s.config:  # image-text methods: the caption tokens of each image
    batch["tokens"] = spec((b, s.config.text.context_length), np.int32)
  return batch


def compile_step(config: ml_collections.ConfigDict, topology: str) -> dict:
  """AOT-compiles `config`'s train step for `topology` -> per-chip memory, costs, collectives,
  and the roofline estimate."""
  chip = chip_of(topology)
  devices = topology_devices(topology)
  t0 = time.perf_counter()
  s = setup_lib.build(config, devices=devices, data_free=True)
  step = train.make_train_step(s)
  lowered = step.lower(s.abstract_state, abstract_batch(s))
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  n = len(devices)
  memory = perf.memory_stats(compiled)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0))  # per chip: the SPMD program is one partition's
  bytes_accessed = float(cost.get("bytes accessed", 0.0))
  found = collectives(compiled.as_text())
  sent = ici_bytes(found, n)
  times = {
    "compute_s": flops / chip.bf16_flops,
    "hbm_s": bytes_accessed / chip.hbm_bandwidth,
    "ici_s": sent / chip.ici_bandwidth,
  }
  bound_s = max(times.values())
  peak_gib = memory["peak_mb"] / 1024 if memory else None
  return {
    "topology": topology,
    "chips": n,
    "chip": chip.name,
    "global_batch": config.batch_size,
    "per_chip_batch": config.batch_size / n,
    "image_size": config.dataset.image_size,
    "dtype": config.dtype,
    "compile_s": round(compile_s, 1),
    "memory_mib": memory,
    "peak_gib": round(peak_gib, 2) if peak_gib is not None else None,
    "hbm_gib": chip.hbm_bytes / 2**30,
    "fits": peak_gib is not None and peak_gib * 2**30 <= chip.hbm_bytes,
    "flops_per_chip_step": flops,
    "bytes_accessed_per_chip_step": bytes_accessed,
    "collectives": found,
    "ici_bytes_per_chip_step": sent,
    "roofline_s": times,
    "bound": max(times, key=times.get).removesuffix("_s"),
    "max_img_s_per_chip": round(config.batch_size / n / bound_s, 1) if bound_s else None,
    "max_mfu": round(times["compute_s"] / bound_s, 3) if bound_s else None,
    "chip_source": chip.source,
  }


def main(argv=None) -> int:
  import argparse

  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", required=True, help="configs/x.py[:arg]")
  parser.add_argument("--topology", help="e.g. v5e:4x4 (default: the config's TPU_TOPOLOGY)")
  args, overrides = parser.parse_known_args(argv)
  if not os.environ.get("JAX_PLATFORMS"):
    # The compile-only TPU client loads libtpu itself; jax's own backends stay on the CPU, so
    # that no process waits on TPU discovery where libtpu is installed without a TPU. Set here,
    # not at import: a library user (benchmarks/device_check.py on a GPU) keeps its platform.
    jax.config.update("jax_platforms", "cpu")
  config, declared = load_config_file(args.config)
  config_lib.apply_overrides(config, compile_overrides(args.config) + overrides)
  topology = args.topology or declared
  if not topology:
    parser.error(f"{args.config} declares no TPU_TOPOLOGY; pass --topology (e.g. v5e:4x4).")
  print(json.dumps(compile_step(config, topology), indent=1))
  return 0


def tpu_configs() -> list[str]:
  return sorted(glob.glob(os.path.join(REPO, "configs", "*_tpu.py")))


if __name__ == "__main__":
  sys.exit(main())
