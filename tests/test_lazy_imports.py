"""A train step builds, traces and compiles where TensorFlow and clu are not installed.

They are needed to read data and write TensorBoard summaries, not to build a step: a GPU image
with jax, flax and optax alone runs `benchmarks/device_check.py` and `sslax.aot` (sslax/_lazy.py).
"""

import os
import subprocess
import sys
import textwrap

import pytest

from sslax import _lazy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "tensorflow_datasets", "clu")

# Makes the heavy packages impossible to import, as on a machine without them.
BLOCK = textwrap.dedent(
  f"""
  import importlib.abc, sys
  class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
      if name.split(".")[0] in {HEAVY!r}:
        raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
  sys.meta_path.insert(0, Block())
  """
)


def _run(code: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
  env.pop("XLA_FLAGS", None)  # one CPU device is enough
  return subprocess.run(
    [sys.executable, "-c", BLOCK + textwrap.dedent(code)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )


def test_a_step_builds_and_compiles_without_tensorflow_or_clu():
  proc = _run(
    """
    import jax
    from sslax import aot, config as config_lib, perf, setup, train
    config, _ = aot.load_config_file("configs/simclr_tpu.py")
    config_lib.apply_overrides(config, ["batch_size=4", "dataset.image_size=32",
                                        "model.depth=18", "model.width=0.125"])
    s = setup.build(config, devices=jax.devices()[:1], data_free=True)
    traced = train.make_train_step(s).trace(s.abstract_state, aot.abstract_batch(s))
    traced.lower().compile()
    print("flops", perf.jaxpr_flops(traced.jaxpr))
    print("loaded", sorted(m for m in sys.modules if m.split(".")[0] in %r))
    """
    % (HEAVY,)
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "loaded []" in proc.stdout
  assert float(proc.stdout.split("flops ")[1].split()[0]) > 0


def test_reading_data_without_tensorflow_says_what_needs_it():
  proc = _run(
    """
    from sslax.data import augment
    augment.random_flip(None, (0, 0))
    """
  )
  assert proc.returncode != 0
  assert "tensorflow is needed for the augmentations" in proc.stderr
  assert "requirements.lock" in proc.stderr


def test_lazy_module_imports_on_first_use():
  lazy = _lazy.module("json", "a test")
  assert "json" in repr(lazy)
  assert lazy.dumps([1]) == "[1]"
  missing = _lazy.module("sslax_no_such_package", "the frobnicator")
  with pytest.raises(ImportError, match="sslax_no_such_package is needed for the frobnicator"):
    missing.anything  # noqa: B018 -- the attribute access is the import
