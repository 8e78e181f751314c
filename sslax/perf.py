"""Performance accounting: step FLOPs, peak FLOP/s, MFU, compiled memory, CPU XLA defaults.

MFU here is model FLOPs utilisation in the usual sense: the FLOPs XLA's cost analysis counts
for one compiled train step (forward, backward and update; per device, times the devices that
run it), divided by the step time, over the peak FLOP/s of the same machine. The peak is
measured, not looked up: a large matmul in the step's dtype (`measured_peak_flops`), so the
figure is honest on any CPU; on GPUs and TPUs the vendor's dense peak is also given
(`vendor_peak_flops`) since a measured matmul already loses a little to it.

`apply_cpu_xla_defaults` must run before jax initialises its backends (sslax.main calls it
at import); it only adds flags the user has not set, so `XLA_FLAGS=...device_count=8` keeps
working.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import re
import time
from typing import Any, Mapping

import numpy as np

# XLA:CPU options the trainer adds on CPU: flag name -> value; a flag already in XLA_FLAGS is
# left alone. Empty by measurement: on the SimCLR ResNet-18 step (benchmarks/torch_compare.py,
# results/torch_compare.md) none of oneDNN, XNNPACK graph fusion, fast-math, XNNPACK off or the
# FAST_RUNTIME preset changed CPU-seconds per step by more than the noise (2.93-3.10 s, jaxlib
# 0.10.2, 2-core AMD EPYC). Add an option here only with a measured gain.
CPU_XLA_DEFAULTS: dict[str, str] = {}

# Dense (no sparsity) peak FLOP/s per device from vendor data sheets, by a substring of
# `device.device_kind` (checked in order: more specific names first).
VENDOR_PEAK_FLOPS: tuple[tuple[str, Mapping[str, float]], ...] = (
  ("H200", {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}),
  ("H100 PCIe", {"bfloat16": 756e12, "float16": 756e12, "float32": 51e12}),
  ("H100", {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12}),
  ("A100", {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12}),
  ("L4", {"bfloat16": 121e12, "float16": 121e12, "float32": 30.3e12}),
  ("A10G", {"bfloat16": 70e12, "float16": 70e12, "float32": 31.2e12}),
  ("V100", {"float16": 125e12, "float32": 15.7e12}),
  ("TPU v6", {"bfloat16": 918e12}),
  ("TPU v5p", {"bfloat16": 459e12}),
  ("TPU v5 lite", {"bfloat16": 197e12}),
  ("TPU v5e", {"bfloat16": 197e12}),
  ("TPU v4", {"bfloat16": 275e12}),
  ("TPU v3", {"bfloat16": 123e12}),
)


# ---------------------------------------------------------------------------------------------
# Compiled-step analysis
# ---------------------------------------------------------------------------------------------


def _tree_leaves(tree):
  import jax

  return jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, "device_set"))


def compiled_num_devices(compiled) -> int:
  """How many devices a compiled function runs on (the largest device set of its inputs)."""
  leaves = [s for s in _tree_leaves(compiled.input_shardings) if hasattr(s, "device_set")]
  return max((len(s.device_set) for s in leaves), default=1)


def step_flops(compiled) -> float | None:
  """Total FLOPs of one call of `compiled` over all its devices (None if unknown)."""
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # some backends (and old plugins) do not implement it
    return None
  if isinstance(analysis, (list, tuple)):  # older jax returned one dict per program
    analysis = analysis[0] if analysis else None
  if not analysis or not analysis.get("flops"):
    return None
  return float(analysis["flops"]) * compiled_num_devices(compiled)


# ---------------------------------------------------------------------------------------------
# Matmul FLOPs from the traced program (platform-independent)
# ---------------------------------------------------------------------------------------------

# Measured on an H200 (benchmarks/results/device_check.json): XLA:GPU's cost analysis of the
# compiled SimCLR ResNet-50 step counted 0.43 TFLOP where its convolutions and matmuls do 25.9:
# the work handed to cuDNN / cuBLAS (custom calls) is not counted, so an MFU from it is ~60x too
# low. The jaxpr count below is the same on every platform, before any lowering.


def _taps(in_size, kernel, out_size, stride, pad_lo, lhs_dilation, rhs_dilation) -> int:
  """Along one spatial axis: the (output position, kernel tap) pairs that land on a real input
  element: not on padding, not on the zeros an input dilation inserts."""
  pos = np.arange(out_size)[:, None] * stride + np.arange(kernel)[None, :] * rhs_dilation - pad_lo
  real = (pos >= 0) & (pos <= (in_size - 1) * lhs_dilation) & (pos % lhs_dilation == 0)
  return int(real.sum())


def _conv_flops(eqn) -> float:
  """2 x the multiply-adds that touch real input: output batch x output features x input
  features per group x, per spatial axis, the taps that land on input elements. So the gradient
  of a stride-s convolution w.r.t. its input (a convolution of the s-dilated gradient) costs what
  the forward does, and taps on padding are not counted (as XLA's cost analysis does)."""
  p = eqn.params
  lhs, rhs, out = (v.aval for v in (*eqn.invars[:2], eqn.outvars[0]))
  lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
  spatial = len(lhs_spec) - 2
  taps = 1
  for d in range(spatial):
    taps *= _taps(
      lhs.shape[lhs_spec[2 + d]],
      rhs.shape[rhs_spec[2 + d]],
      out.shape[out_spec[2 + d]],
      p["window_strides"][d],
      p["padding"][d][0],
      (p.get("lhs_dilation") or (1,) * spatial)[d],
      (p.get("rhs_dilation") or (1,) * spatial)[d],
    )
  per_tap = out.shape[out_spec[0]] * out.shape[out_spec[1]] * rhs.shape[rhs_spec[1]]
  return 2.0 * per_tap * taps


def _dot_flops(eqn) -> float:
  """2 x output elements x the contracted size."""
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval
  contracted = math.prod(lhs.shape[d] for d in lhs_contract)
  return 2.0 * math.prod(eqn.outvars[0].aval.shape) * contracted


def _sub_jaxprs(value):
  from jax.extend import core

  if isinstance(value, core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)


def _live_eqns(jaxpr) -> list:
  """The equations whose results reach the outputs (or that have effects): what XLA runs after
  dead-code elimination (a traced jaxpr still holds, say, a forward matmul whose result the
  gradient does not need)."""
  is_var = lambda v: type(v).__name__ not in ("Literal", "DropVar")
  live = {v for v in jaxpr.outvars if is_var(v)}
  kept = []
  for eqn in reversed(jaxpr.eqns):
    if eqn.effects or any(v in live for v in eqn.outvars if is_var(v)):
      kept.append(eqn)
      live.update(v for v in eqn.invars if is_var(v))
  return kept[::-1]


def jaxpr_flops(jaxpr) -> float:
  """Matmul and convolution FLOPs of a (closed) jaxpr: 2 per multiply-add, whole program.

  Recurses into nested jaxprs (jit, remat, custom_jvp/vjp, shard_map bodies times the devices
  that run them, scan bodies times their length, the costliest branch of a cond, while bodies
  once: their trip count is not static). Elementwise work is not counted: this is the numerator
  of MFU against a matmul (tensor-core) peak, the convention of PaLM's MFU. Recomputation under
  remat is in the jaxpr of the backward pass and is counted (hardware FLOPs).
  """
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0.0
  for eqn in _live_eqns(jaxpr):
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    elif name == "cond":
      total += max((jaxpr_flops(b) for b in eqn.params["branches"]), default=0.0)
    else:
      inner = sum(jaxpr_flops(j) for v in eqn.params.values() for j in _sub_jaxprs(v))
      if name == "scan":
        inner *= eqn.params["length"]
      elif name == "shard_map":
        inner *= math.prod(eqn.params["mesh"].shape.values())
      total += inner
  return total


def traced_flops(jitted, *args) -> float:
  """jaxpr_flops of `jitted` (a jax.jit function) traced at `args` (arrays or
  jax.ShapeDtypeStruct): the whole step over all devices; nothing is compiled."""
  return jaxpr_flops(jitted.trace(*args).jaxpr)


def is_gpu(compiled_or_platform) -> bool:
  """Whether XLA's compiled cost analysis misses library calls there (see above)."""
  platform = compiled_or_platform
  if not isinstance(platform, str):
    leaves = [
      s for s in _tree_leaves(compiled_or_platform.input_shardings) if hasattr(s, "device_set")
    ]
    platform = next(iter(leaves[0].device_set)).platform if leaves else "cpu"
  return platform.lower() in ("gpu", "cuda", "rocm")


def memory_stats(compiled) -> dict[str, float] | None:
  """Per-device memory of a compiled function from XLA's memory analysis, in MiB.

  peak_mb = arguments + outputs + temporaries - aliased (donated) bytes: the most the program
  holds at once on one device, apart from the generated code.
  """
  try:
    mem = compiled.memory_analysis()
  except Exception:
    return None
  if mem is None:
    return None
  mib = lambda n: round(float(n) / 2**20, 2)
  arg, out = mem.argument_size_in_bytes, mem.output_size_in_bytes
  temp, alias = mem.temp_size_in_bytes, mem.alias_size_in_bytes
  return {
    "argument_mb": mib(arg),
    "output_mb": mib(out),
    "temp_mb": mib(temp),
    "alias_mb": mib(alias),
    "peak_mb": mib(arg + out + temp - alias),
    "generated_code_mb": mib(mem.generated_code_size_in_bytes),
  }


# ---------------------------------------------------------------------------------------------
# Peak FLOP/s
# ---------------------------------------------------------------------------------------------


def _matmul_size(platform: str) -> int:
  # Big enough to reach the machine's matmul roofline, small enough to be cheap at the start
  # of every run: 1024^3 * 2 = 2.1 GFLOP on a CPU, 8192^3 * 2 = 1.1 TFLOP on an accelerator.
  return 1024 if platform == "cpu" else 8192


@functools.lru_cache(maxsize=None)
def measured_peak_flops(
  dtype: str = "float32", platform: str | None = None, size: int = 0, repeats: int = 3
) -> float:
  """FLOP/s of the whole host (CPU) or of one device (GPU/TPU) on a large [n, n] matmul.

  Cached per process: the first call costs well under a second, later calls nothing. On CPU the
  matmul runs on one device with every core, which is also the peak of any number of fake
  CPU devices (they share those cores).
  """
  import jax
  import jax.numpy as jnp

  device = jax.devices(platform)[0] if platform else jax.devices()[0]
  n = size or _matmul_size(device.platform)
  dt = jnp.dtype(dtype)
  a = jax.device_put(jnp.ones((n, n), dt) / n, device)
  b = jax.device_put(jnp.ones((n, n), dt) / n, device)
  # A few chained matmuls per call hide the dispatch overhead on fast accelerators.
  chain = 1 if device.platform == "cpu" else 8

  @jax.jit
  def matmuls(a, b):
    for _ in range(chain):
      a = jnp.dot(a, b, preferred_element_type=dt)
    return a

  jax.block_until_ready(matmuls(a, b))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(matmuls(a, b))
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n**3 * chain / best


def vendor_peak_flops(device_kind: str, dtype: str = "float32") -> float | None:
  """Data-sheet dense peak FLOP/s of one device, or None for unknown devices (and CPUs)."""
  for key, peaks in VENDOR_PEAK_FLOPS:
    if key.lower() in device_kind.lower():
      return peaks.get(dtype)
  return None


def machine_peak_flops(num_devices: int, dtype: str = "float32") -> float:
  """Measured peak of the devices a step runs on: the host on CPU, n x one device elsewhere."""
  import jax

  platform = jax.devices()[0].platform
  per_device = measured_peak_flops(dtype)
  return per_device if platform == "cpu" else per_device * num_devices


def mfu(
  flops_per_step: float | None, step_seconds: float, peak_flops: float | None
) -> float | None:
  """Model FLOPs utilisation: achieved FLOP/s over peak FLOP/s (None if either is unknown)."""
  if not flops_per_step or not peak_flops or step_seconds <= 0:
    return None
  return flops_per_step / step_seconds / peak_flops


# ---------------------------------------------------------------------------------------------
# XLA:CPU flag defaults
# ---------------------------------------------------------------------------------------------

_FLAG_NAME = re.compile(r"--?(xla_[A-Za-z0-9_]+)")


def xla_flag_names(xla_flags: str) -> set[str]:
  """Names of the flags in an XLA_FLAGS string ('--a=1 --b' -> {'a', 'b'})."""
  return set(_FLAG_NAME.findall(xla_flags or ""))


def merge_xla_flags(xla_flags: str, defaults: Mapping[str, str]) -> str:
  """xla_flags with each default appended unless the user already set that flag."""
  present = xla_flag_names(xla_flags)
  extra = [f"--{name}={value}" for name, value in defaults.items() if name not in present]
  return " ".join([xla_flags.strip()] + extra if xla_flags and xla_flags.strip() else extra)


def _accelerator_expected(environ: Mapping[str, str]) -> bool:
  platforms = environ.get("JAX_PLATFORMS", environ.get("JAX_PLATFORM_NAME", "")).lower()
  if platforms:
    return not all(p.strip() == "cpu" for p in platforms.split(",") if p.strip())
  # A GPU or TPU plugin is installed: jax will pick the accelerator, leave XLA:CPU alone.
  return any(
    importlib.util.find_spec(m) is not None
    for m in (
      "jax_cuda12_plugin",
      "jax_cuda13_plugin",
      "jax_rocm60_plugin",
      "jax_rocm7_plugin",
      "libtpu",
    )
  )


def apply_cpu_xla_defaults(environ: Any = None, defaults: Mapping[str, str] | None = None) -> str:
  """Adds CPU_XLA_DEFAULTS to XLA_FLAGS when jax will run on CPU; returns the new XLA_FLAGS.

  Call before jax initialises a backend (flags are read once). No-op when an accelerator is
  expected, when SSLAX_NO_CPU_XLA_DEFAULTS=1, or for flags the user has already set.
  """
  environ = os.environ if environ is None else environ
  defaults = CPU_XLA_DEFAULTS if defaults is None else defaults
  current = environ.get("XLA_FLAGS", "")
  if (
    not defaults
    or environ.get("SSLAX_NO_CPU_XLA_DEFAULTS", "") == "1"
    or _accelerator_expected(environ)
  ):
    return current
  merged = merge_xla_flags(current, defaults)
  environ["XLA_FLAGS"] = merged
  return merged


CPU_DEVICE_COUNT_FLAG = "xla_force_host_platform_device_count"


def apply_cpu_devices(count: int, environ: Any = None) -> str:
  """Splits the CPU into `count` jax devices (config.cpu_devices) via XLA_FLAGS; returns it.

  No-op for count 0, when an accelerator is expected, or when XLA_FLAGS already sets the device
  count (the user's, or a test's, wins). Must run before jax creates its CPU backend, which
  reads the flag once: afterwards it raises instead of silently doing nothing.
  """
  environ = os.environ if environ is None else environ
  current = environ.get("XLA_FLAGS", "")
  if (
    count <= 0 or _accelerator_expected(environ) or CPU_DEVICE_COUNT_FLAG in xla_flag_names(current)
  ):
    return current
  if _backends_initialized():
    raise RuntimeError(
      f"config.cpu_devices={count} must be applied before jax starts its CPU backend (sslax.main "
      f"does); in your own script set XLA_FLAGS=--{CPU_DEVICE_COUNT_FLAG}={count} before "
      "importing jax, or leave cpu_devices 0."
    )
  merged = merge_xla_flags(current, {CPU_DEVICE_COUNT_FLAG: str(int(count))})
  environ["XLA_FLAGS"] = merged
  return merged


def _backends_initialized() -> bool:
  try:
    from jax._src import xla_bridge
  except ImportError:  # jax not importable yet: nothing started
    return False
  return bool(getattr(xla_bridge, "backends_are_initialized", lambda: False)())


def summarize_seconds(samples) -> dict[str, float]:
  """Median, min and spread of timing samples (medians are robust on a shared machine)."""
  x = np.asarray(list(samples), np.float64)
  return {
    "median": float(np.median(x)),
    "min": float(x.min()),
    "max": float(x.max()),
    "n": int(x.size),
  }
