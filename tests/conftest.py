"""Every test process sees 8 fake CPU devices, so multi-device code is tested against 1 device."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Many tests compile the same small train steps (each `train.train` call jits afresh): a
# persistent compilation cache shared by this run's workers and the subprocesses they start
# compiles each program once (measured: tests/test_resume.py + test_train_loop.py 4m44s ->
# 2m47s). A fresh directory per run (xdist's run id, else the pid): nothing stale is reused.
_RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
_OWN_CACHE = os.path.join("/tmp", f"sslax_test_jax_cache_{_RUN_ID}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _OWN_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402  (after XLA_FLAGS)
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def devices():
  devs = jax.devices()
  assert len(devs) == 8, "tests expect 8 fake CPU devices (XLA_FLAGS set in conftest.py)"
  return devs


def pytest_sessionfinish(session):
  """The controller (or a run without xdist) removes this run's compilation cache (never a
  cache directory the user set)."""
  if (
    not hasattr(session.config, "workerinput")
    and os.environ["JAX_COMPILATION_CACHE_DIR"] == _OWN_CACHE
  ):
    import shutil

    shutil.rmtree(_OWN_CACHE, ignore_errors=True)
