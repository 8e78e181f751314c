"""A stand-in for `torchvision`, for importing timm where no working torchvision is installed.

timm imports torchvision at import time (data transforms, dataset factories, FrozenBatchNorm2d)
although building and running its models needs none of it. PyPI's torchvision wheels are built
against PyPI's torch; beside another build of the same torch version (e.g. the CPU-only wheel)
`import torchvision` fails ("operator torchvision::nms does not exist"). sslax's ONNX export
runs timm in a subprocess and, only when the real torchvision does not import, loads this file
as the `torchvision` package instead. It is never imported by sslax itself.

It provides exactly the names timm 1.0 imports: torchvision.transforms (+ .functional with
InterpolationMode), torchvision.datasets, torchvision.ops.misc.FrozenBatchNorm2d and
torchvision.utils. Every class or function in them is a placeholder that raises on use; the
absent torchvision.models makes timm's optional feature-extraction import fail as it expects.
"""

import enum
import importlib.machinery
import sys
import types

__version__ = "0.0+sslax.stub"


class _Unavailable:
  """Base of every placeholder: subclassing works (timm does at import), calling raises."""

  def __init__(self, *args, **kwargs):
    raise ImportError(
      f"{type(self).__module__}.{type(self).__name__} is unavailable: this process runs with "
      "sslax's torchvision stand-in (the installed torchvision does not import)."
    )


def _submodule(name: str, **attrs) -> types.ModuleType:
  module = types.ModuleType(f"{__name__}.{name}")
  module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
  module.__dict__.update(attrs)
  made = {}

  def placeholder(attr: str):
    if attr.startswith("__"):
      raise AttributeError(attr)
    if attr not in made:
      made[attr] = type(attr, (_Unavailable,), {"__module__": module.__name__})
    return made[attr]

  module.__getattr__ = placeholder  # PEP 562: any other name is a placeholder class
  sys.modules[module.__name__] = module
  parent, _, leaf = module.__name__.rpartition(".")
  setattr(sys.modules[parent], leaf, module)
  return module


class InterpolationMode(enum.Enum):
  NEAREST = "nearest"
  NEAREST_EXACT = "nearest-exact"
  BILINEAR = "bilinear"
  BICUBIC = "bicubic"
  BOX = "box"
  HAMMING = "hamming"
  LANCZOS = "lanczos"


_submodule("transforms")
_submodule("transforms.functional", InterpolationMode=InterpolationMode)
_submodule("datasets")
_submodule("ops")
_submodule("ops.misc")
_submodule("utils")
