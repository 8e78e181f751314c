"""Method registry: `config.method` names one of these."""
from __future__ import annotations

from sslax.methods.base import Method
from sslax.methods.simclr import SimCLR

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (SimCLR,)}


def get_method(name: str) -> type[Method]:
  if name not in METHODS:
    raise ValueError(f"Unknown method {name!r}; choose one of {sorted(METHODS)}.")
  return METHODS[name]
