"""Import a heavy optional module on first use, with an actionable error where it is missing.

TensorFlow (the input pipeline and the augmentations) and clu (the training loop's metric
writers) are needed to train, not to build and compile a train step: `sslax.setup.build(...,
data_free=True)`, `sslax.aot` and `benchmarks/device_check.py` run on a machine that has jax,
flax and optax alone (a GPU image without TensorFlow, say). Modules on that path write

  tf = _lazy.module("tensorflow", "the input pipeline")

and use `tf.x` as before: the import happens at the first attribute access (inside a function,
never at sslax's import), and where the package is absent that access raises an ImportError
that says what needs it and how to install it.
"""

from __future__ import annotations

import importlib
import types


class _LazyModule(types.ModuleType):
  """Stands in for module `name` until an attribute is read, then forwards to it."""

  def __init__(self, name: str, needed_for: str):
    super().__init__(name)
    self.__dict__["_lazy_needed_for"] = needed_for
    self.__dict__["_lazy_module"] = None

  def _load(self) -> types.ModuleType:
    module = self.__dict__["_lazy_module"]
    if module is None:
      try:
        module = importlib.import_module(self.__name__)
      except ImportError as e:
        raise ImportError(
          f"{self.__name__} is needed for {self.__dict__['_lazy_needed_for']} but cannot be "
          f"imported ({e}). Install sslax's pinned dependencies: "
          "pip install -e . -c requirements.lock"
        ) from e
      self.__dict__["_lazy_module"] = module
    return module

  def __getattr__(self, attr: str):
    return getattr(self._load(), attr)

  def __dir__(self):
    return dir(self._load())


def module(name: str, needed_for: str) -> types.ModuleType:
  """A stand-in for `import name` that imports it at its first attribute access."""
  return _LazyModule(name, needed_for)
