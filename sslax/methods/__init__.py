"""Method registry: `config.method` names one of these."""
from __future__ import annotations

from sslax.methods.barlow_twins import BarlowTwins
from sslax.methods.base import Method
from sslax.methods.byol import BYOL
from sslax.methods.mocov2 import MoCoV2
from sslax.methods.simclr import SimCLR
from sslax.methods.simsiam import SimSiam
from sslax.methods.swav import SwAV
from sslax.methods.vicreg import VICReg

METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (SimCLR, BYOL, SimSiam, BarlowTwins, VICReg, MoCoV2, SwAV)}


def get_method(name: str) -> type[Method]:
  if name not in METHODS:
    raise ValueError(f"Unknown method {name!r}; choose one of {sorted(METHODS)}.")
  return METHODS[name]
