"""Method registry: `config.method` names one of these."""

from __future__ import annotations

from sslax.methods.barlow_twins import BarlowTwins
from sslax.methods.base import Method
from sslax.methods.beit import BEiT
from sslax.methods.byol import BYOL
from sslax.methods.clip import CLIP
from sslax.methods.cmc import CMC
from sslax.methods.colorization import Colorization
from sslax.methods.cpc import CPC
from sslax.methods.deepcluster import DeepCluster
from sslax.methods.dino import DINO
from sslax.methods.dinov2 import DINOv2
from sslax.methods.exemplar import Exemplar
from sslax.methods.inpainting import Inpainting
from sslax.methods.instdisc import InstDisc
from sslax.methods.jigsaw import Jigsaw
from sslax.methods.linear_eval import LinearEval
from sslax.methods.mae import MAE
from sslax.methods.mocov2 import MoCoV2
from sslax.methods.mocov3 import MoCoV3
from sslax.methods.relative_patch import RelativePatch
from sslax.methods.rotnet import RotNet
from sslax.methods.siglip import SigLIP
from sslax.methods.simclr import SimCLR
from sslax.methods.simsiam import SimSiam
from sslax.methods.swav import SwAV
from sslax.methods.vicreg import VICReg
from sslax.methods.vqkd import VQKD

# In the order of the README's method table: contrastive and non-contrastive joint embedding,
# clustering and distillation, masked image modelling, image-text, pretext tasks.
METHODS: dict[str, type[Method]] = {
  cls.name: cls
  for cls in (
    SimCLR,
    MoCoV2,
    MoCoV3,
    BYOL,
    SimSiam,
    BarlowTwins,
    VICReg,
    SwAV,
    DINO,
    DINOv2,
    MAE,
    VQKD,
    BEiT,
    CLIP,
    SigLIP,
    RotNet,
    Jigsaw,
    RelativePatch,
    Colorization,
    Inpainting,
    DeepCluster,
    InstDisc,
    CMC,
    Exemplar,
    CPC,
    LinearEval,
  )
}


def register(cls: type[Method]) -> type[Method]:
  """Adds a method defined outside sslax (a class decorator); `config.method = cls.name` then
  selects it. A config file that imports the method's module registers it for the CLI."""
  if not (isinstance(cls, type) and issubclass(cls, Method)) or not getattr(cls, "name", ""):
    raise TypeError(f"register() takes a Method subclass with a `name`; got {cls!r}.")
  if METHODS.get(cls.name, cls) is not cls:
    raise ValueError(f"A different method is already registered as {cls.name!r}.")
  METHODS[cls.name] = cls
  return cls


def get_method(name: str) -> type[Method]:
  if name not in METHODS:
    raise ValueError(f"Unknown method {name!r}; choose one of {sorted(METHODS)}.")
  return METHODS[name]
