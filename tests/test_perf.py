"""sslax.perf (FLOPs, memory, peak, XLA flag defaults) and the device prefetch thread."""

from __future__ import annotations

import os
import subprocess
import sys
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


# ---- Matmul FLOPs of the traced program -------------------------------------------------------


def _conv(x, k, stride):
  dn = ("NHWC", "HWIO", "NHWC")
  return jax.lax.conv_general_dilated(x, k, (stride, stride), "VALID", dimension_numbers=dn)


def test_jaxpr_flops_of_a_train_step_is_forward_plus_both_gradients():
  """Stride-2 conv -> dense -> tanh, gradients w.r.t. the weights and the input: 3x the forward's
  multiply-adds (forward, input gradient, weight gradient), 2 FLOPs each, whatever the stride."""
  n, size, cin, cout, k, s, hidden = 2, 9, 3, 4, 3, 2, 5
  out = (size - k) // s + 1
  x = jnp.ones((n, size, size, cin))
  kernel, w = jnp.ones((k, k, cin, cout)), jnp.ones((out * out * cout, hidden))
  loss = lambda x, kernel, w: jnp.sum(jnp.tanh(_conv(x, kernel, s).reshape(n, -1) @ w))
  conv_macs = n * out * out * k * k * cin * cout
  dense_macs = n * out * out * cout * hidden
  forward = perf.traced_flops(jax.jit(loss), x, kernel, w)
  assert forward == 2 * (conv_macs + dense_macs)
  step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  assert perf.traced_flops(step, x, kernel, w) == 3 * forward
  # Weights only: the input gradient of the conv is not computed.
  weights_only = jax.jit(jax.grad(loss, argnums=(1, 2)))
  assert perf.traced_flops(weights_only, x, kernel, w) == 2 * (2 * conv_macs + 3 * dense_macs)
  # Without the tanh the dense layer's output is not needed by any gradient (XLA drops it).
  linear = lambda x, kernel, w: jnp.sum(_conv(x, kernel, s).reshape(n, -1) @ w)
  step = jax.jit(jax.grad(linear, argnums=(0, 1, 2)))
  assert perf.traced_flops(step, x, kernel, w) == 3 * forward - 2 * dense_macs


def test_jaxpr_flops_agrees_with_xla_on_cpu_at_matmul_heavy_sizes():
  """XLA's HLO cost analysis (unoptimized, CPU) also counts elementwise work: within 1% here."""
  x, kernel, w = jnp.ones((8, 17, 17, 32)), jnp.ones((3, 3, 32, 64)), jnp.ones((64 * 64, 256))
  loss = lambda x, kernel, w: jnp.sum(jnp.tanh(_conv(x, kernel, 2).reshape(8, -1) @ w))
  step = jax.jit(jax.grad(loss, argnums=(1, 2)))
  xla = step.lower(x, kernel, w).cost_analysis()["flops"]
  assert perf.traced_flops(step, x, kernel, w) == pytest.approx(xla, rel=0.01)


def test_jaxpr_flops_control_flow_and_dead_code():
  a, b = jnp.ones((4, 6)), jnp.ones((6, 6))
  matmul = 2 * 4 * 6 * 6

  def scanned(a, b):
    return jax.lax.scan(lambda h, _: (h @ b, None), a, None, length=5)[0]

  assert perf.traced_flops(jax.jit(scanned), a, b) == 5 * matmul

  def branch(p, a, b):  # the costlier branch: two matmuls
    return jax.lax.cond(p, lambda: (a @ b) @ b, lambda: a @ b)

  assert perf.traced_flops(jax.jit(branch), True, a, b) == 2 * matmul

  def dead(a, b):
    unused = a @ b  # noqa: F841 -- traced, then removed by XLA: not work
    return a.sum()

  assert perf.traced_flops(jax.jit(dead), a, b) == 0


def test_jaxpr_flops_counts_every_device_of_a_shard_map(devices):
  mesh = jax.make_mesh((8,), ("data",))
  m, k, n = 64, 32, 16
  f = jax.shard_map(lambda a, b: a @ b, mesh=mesh, in_specs=(P("data"), P()), out_specs=P("data"))
  a = jax.device_put(jnp.ones((m, k)), NamedSharding(mesh, P("data")))
  b = jax.device_put(jnp.ones((k, n)), NamedSharding(mesh, P()))
  # Each of the 8 devices multiplies its m/8 rows: the whole product's FLOPs in all.
  assert perf.traced_flops(jax.jit(f), a, b) == 2 * m * k * n


def test_is_gpu():
  assert perf.is_gpu("cuda") and perf.is_gpu("gpu") and not perf.is_gpu("tpu")
  compiled = jax.jit(lambda a: a + 1).lower(jnp.ones(3)).compile()
  assert not perf.is_gpu(compiled)


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


def test_cpu_devices_sets_the_device_count_only_before_jax_starts_and_only_when_unset(monkeypatch):
  # jax's CPU backend is up in this process: a change now would do nothing, so it raises.
  jax.devices()
  with pytest.raises(RuntimeError, match="before jax starts"):
    perf.apply_cpu_devices(2, {"JAX_PLATFORMS": "cpu"})
  # Nothing to change: no error even now (count 0, the user's count, an accelerator).
  mine = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  assert perf.apply_cpu_devices(2, mine) == "--xla_force_host_platform_device_count=8"
  assert perf.apply_cpu_devices(0, {"JAX_PLATFORMS": "cpu"}) == ""
  assert perf.apply_cpu_devices(2, {"JAX_PLATFORMS": "cuda"}) == ""
  monkeypatch.setattr(perf, "_backends_initialized", lambda: False)
  env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
  assert perf.apply_cpu_devices(2, env) == (
    "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=2"
  )
  assert env["XLA_FLAGS"].endswith("device_count=2")


def test_cpu_devices_splits_a_fresh_process_into_data_parallel_devices():
  code = (
    "from sslax import perf; perf.apply_cpu_devices(2); import jax; "
    "print(jax.device_count(), jax.devices()[0].platform)"
  )
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run(
    [sys.executable, "-c", code],
    env=dict(env, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=120,
    check=True,
  )
  assert out.stdout.split() == ["2", "cpu"]


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
