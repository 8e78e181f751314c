"""sslax.perf (FLOPs, memory, peak, XLA flag defaults) and the device prefetch thread."""

from __future__ import annotations

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from sslax import perf
from sslax.data.prefetch import DevicePrefetcher


# ---- FLOPs and memory from XLA's analyses -----------------------------------------------------


def test_step_flops_counts_all_devices_of_a_sharded_matmul(devices):
  m, k, n = 64, 32, 16
  mesh = jax.make_mesh((8,), ("data",))
  f = jax.jit(
    lambda a, b: a @ b, in_shardings=(NamedSharding(mesh, P("data")), NamedSharding(mesh, P()))
  )
  compiled = f.lower(jnp.ones((m, k)), jnp.ones((k, n))).compile()
  assert perf.compiled_num_devices(compiled) == 8
  # A [m, k] @ [k, n] matmul is m*n dot products of length k: 2*m*k*n FLOPs in all.
  assert perf.step_flops(compiled) == pytest.approx(2 * m * k * n, rel=0.01)


def test_memory_stats_per_device(devices):
  mesh = jax.make_mesh((8,), ("data",))
  f = jax.jit(lambda a: a * 2.0, in_shardings=NamedSharding(mesh, P("data")), donate_argnums=0)
  stats = perf.memory_stats(f.lower(jnp.ones((8 * 1024, 32), jnp.float32)).compile())
  shard_mb = 1024 * 32 * 4 / 2**20  # one device's rows, float32
  assert stats["argument_mb"] == pytest.approx(shard_mb, abs=0.01)
  assert stats["output_mb"] == pytest.approx(shard_mb, abs=0.01)
  assert stats["alias_mb"] == pytest.approx(shard_mb, abs=0.01)  # donated: output reuses input
  assert stats["peak_mb"] == pytest.approx(
    stats["argument_mb"] + stats["output_mb"] + stats["temp_mb"] - stats["alias_mb"], abs=0.02
  )


def test_measured_peak_and_mfu(devices):
  peak = perf.measured_peak_flops("float32", size=256, repeats=2)
  assert 1e8 < peak < 1e15  # between a very slow core and far beyond any CPU
  assert perf.mfu(1e9, 0.5, 4e9) == pytest.approx(0.5)
  assert perf.mfu(None, 0.5, 4e9) is None and perf.mfu(1e9, 0.5, None) is None


def test_vendor_peaks():
  assert perf.vendor_peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
  assert perf.vendor_peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756e12
  assert perf.vendor_peak_flops("NVIDIA A100-SXM4-40GB", "float32") == 19.5e12
  assert perf.vendor_peak_flops("TPU v4", "bfloat16") == 275e12
  assert perf.vendor_peak_flops("cpu", "float32") is None


# ---- XLA flag defaults ------------------------------------------------------------------------


def test_merge_keeps_user_flags_and_device_count():
  user = "--xla_force_host_platform_device_count=8 --xla_cpu_use_onednn=false"
  merged = perf.merge_xla_flags(
    user, {"xla_cpu_use_onednn": "true", "xla_cpu_enable_fast_math": "false"}
  )
  assert merged.split() == [
    "--xla_force_host_platform_device_count=8",
    "--xla_cpu_use_onednn=false",
    "--xla_cpu_enable_fast_math=false",
  ]
  assert perf.merge_xla_flags("", {"xla_a": "1"}) == "--xla_a=1"


def test_apply_cpu_defaults_only_on_cpu_and_when_enabled():
  defaults = {"xla_cpu_enable_fast_math": "false"}
  env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  assert perf.apply_cpu_xla_defaults(env, defaults) == (
    "--xla_force_host_platform_device_count=8 --xla_cpu_enable_fast_math=false"
  )
  assert env["XLA_FLAGS"].endswith("--xla_cpu_enable_fast_math=false")
  gpu = {"JAX_PLATFORMS": "cuda", "XLA_FLAGS": ""}
  assert perf.apply_cpu_xla_defaults(gpu, defaults) == "" and gpu["XLA_FLAGS"] == ""
  off = {"JAX_PLATFORMS": "cpu", "SSLAX_NO_CPU_XLA_DEFAULTS": "1"}
  assert perf.apply_cpu_xla_defaults(off, defaults) == "" and "XLA_FLAGS" not in off


# ---- Device prefetch --------------------------------------------------------------------------


def test_prefetch_keeps_order_and_applies_put():
  with DevicePrefetcher(iter(range(10)), put=lambda x: x * 10, size=2) as it:
    assert list(it) == [10 * i for i in range(10)]


def test_prefetch_is_bounded():
  produced = []

  def source():
    for i in range(100):
      produced.append(i)
      yield i

  it = DevicePrefetcher(source(), size=3)
  assert next(it) == 0
  time.sleep(0.3)  # give the thread every chance to run ahead
  # 1 consumed + 3 queued + 1 held by the blocked thread, at most.
  assert len(produced) <= 5
  it.close()
  assert not it.alive


def test_prefetch_reraises_pipeline_errors_in_order():
  def source():
    yield 1
    yield 2
    raise ValueError("bad record 3")

  it = DevicePrefetcher(source(), size=2)
  assert next(it) == 1 and next(it) == 2
  with pytest.raises(ValueError, match="bad record 3"):
    next(it)
  with pytest.raises(StopIteration):
    next(it)
  it.close()


def test_prefetch_close_stops_a_blocked_thread_on_an_infinite_stream():
  def forever():
    i = 0
    while True:
      yield i
      i += 1

  it = DevicePrefetcher(forever(), size=1)
  next(it)
  it.close(timeout=5)
  assert not it.alive
  assert not any(
    t.name == "sslax-device-prefetch" and t.is_alive()
    for t in threading.enumerate()
    if t is it._thread
  )


def test_prefetch_measures_input_wait():
  def slow():
    for i in range(3):
      time.sleep(0.1)
      yield i

  it = DevicePrefetcher(slow(), size=2)
  assert list(it) == [0, 1, 2]
  assert it.wait_seconds >= 0.2  # the consumer waited for (almost) every slow batch
  it.close()


def test_prefetch_puts_on_the_mesh(devices):
  from sslax import sharding

  mesh = sharding.make_mesh({"data": -1, "fsdp": 1})
  host = [{"x": np.full((8, 2), i, np.float32)} for i in range(3)]
  with DevicePrefetcher(iter(host), put=lambda b: sharding.make_global_batch(mesh, b)) as it:
    out = list(it)
  assert [float(b["x"][0, 0]) for b in out] == [0.0, 1.0, 2.0]
  assert out[0]["x"].sharding.is_equivalent_to(sharding.batch_sharding(mesh), 2)


def test_prefetch_rejects_bad_size():
  with pytest.raises(ValueError, match="size=0"):
    DevicePrefetcher(iter([]), size=0)
