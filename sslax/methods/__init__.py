"""Method registry: `config.method` names one of these."""

from __future__ import annotations

from sslax.methods.barlow_twins import BarlowTwins
from sslax.methods.base import Method
from sslax.methods.byol import BYOL
from sslax.methods.clip import CLIP
from sslax.methods.colorization import Colorization
from sslax.methods.deepcluster import DeepCluster
from sslax.methods.dino import DINO
from sslax.methods.inpainting import Inpainting
from sslax.methods.jigsaw import Jigsaw
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

METHODS: dict[str, type[Method]] = {
  cls.name: cls
  for cls in (
    SimCLR,
    BYOL,
    SimSiam,
    BarlowTwins,
    VICReg,
    MoCoV2,
    SwAV,
    MoCoV3,
    DINO,
    RotNet,
    Jigsaw,
    RelativePatch,
  )
}
METHODS.update(
  {cls.name: cls for cls in (CLIP, SigLIP)}
)  # image-text (sslax/methods/image_text.py)

METHODS.update({cls.name: cls for cls in (Colorization, Inpainting, DeepCluster)})  # pretext II
METHODS[MAE.name] = MAE  # masked image modelling (sslax/methods/mae.py)


def get_method(name: str) -> type[Method]:
  if name not in METHODS:
    raise ValueError(f"Unknown method {name!r}; choose one of {sorted(METHODS)}.")
  return METHODS[name]
