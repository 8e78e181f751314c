"""The protocol registry: name -> `Protocol` (a function of encoders + context, and what it needs).

A protocol is `fn(encoders, ctx) -> {encoder name: results}`; it runs every encoder it is
given the same way. Which encoders it gets (the trained one, plus `baselines` when
config.eval.baselines) is the caller's choice (sslax/evaluate.py), not the protocol's.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class Context:
  """What a protocol may read besides its encoders."""

  config: object  # ml_collections.ConfigDict of the run (config.dataset, config.eval, seed)
  workdir: str | None  # feature caches and protocol files go here; None: nothing written
  views: tuple = ()  # the method's training views (sslax.data.augment.ViewSpec), for pictures


@dataclasses.dataclass(frozen=True)
class Protocol:
  name: str
  fn: Callable  # (encoders: Sequence[Encoder], ctx: Context) -> {encoder name: dict}
  summary: str  # one line, for --help
  baselines: tuple[str, ...] = ()  # encoders added to "pretrained" when config.eval.baselines
  image_text: bool = False  # needs image-text encoders (Encoder.text set): clip, siglip


PROTOCOLS: dict[str, Protocol] = {}


def register(name: str, *, summary: str, baselines: Sequence[str] = (), image_text: bool = False):
  """Decorator: registers `fn(encoders, ctx)` as protocol `name`."""

  def wrap(fn):
    if name in PROTOCOLS:
      raise ValueError(f"protocol {name!r} is registered twice")
    PROTOCOLS[name] = Protocol(name, fn, summary, tuple(baselines), image_text)
    return fn

  return wrap


def get(name: str) -> Protocol:
  """The protocol `name`; fails (before any checkpoint is read) listing the known ones."""
  if name not in PROTOCOLS:
    raise ValueError(f"Unknown protocol {name!r}; choose one of {tuple(PROTOCOLS)}.")
  return PROTOCOLS[name]
