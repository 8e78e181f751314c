"""The momentum (EMA) teacher shared by every momentum method (MoCo v2/v3, BYOL, DINO).

A teacher is a copy of some modules of the online network (`modules`; None = all of them):
its params follow the online params by EMA after each optimizer step, and its BatchNorm
running statistics come from its own training-mode passes (as in the references, whose
momentum update covers parameters, not buffers). It lives in `method_state["teacher"]` as
{"params", "batch_stats"} and never gets a gradient: it is not a trained param, and
`variables` passes it through a stop-gradient, so "no gradient to the teacher" holds even for
a caller that differentiates w.r.t. method_state. The momentum schedule stays the method's
(each reference indexes it differently); the arithmetic is `sslax.optim.ema_update`. With
`after_update`'s `step` = steps taken (k + 1 after the step with 0-based index k):
BYOL (`_update_fn`) and DINO (`momentum_schedule[it]`) use m(k) = m(step - 1), after the
optimizer step; MoCo v3 updates at the start of its next iteration with m(step) (the same
params, as that iteration's forward comes before its optimizer step).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from sslax import optim

PyTree = Any


class EMATeacher:
  def __init__(self, modules: Sequence[str] | None = None):
    self.modules = None if modules is None else tuple(modules)

  def _select(self, tree: PyTree) -> PyTree:
    if self.modules is None:
      return tree
    return {k: tree[k] for k in self.modules if k in tree}

  def init(self, variables: PyTree) -> dict:
    """The teacher at step 0: a copy of the online modules' params and BN statistics."""
    copy = lambda tree: jax.tree.map(jnp.copy, self._select(tree))
    return {
      "params": copy(variables["params"]),
      "batch_stats": copy(variables.get("batch_stats", {})),
    }

  def variables(self, teacher: dict) -> dict:
    """{"params", "batch_stats"} to apply the teacher with; never differentiated."""
    return jax.lax.stop_gradient(teacher)

  def with_batch_stats(self, teacher: dict, batch_stats: PyTree) -> dict:
    """The teacher after a training-mode pass updated its BN running statistics."""
    return dict(teacher, batch_stats=batch_stats)

  def update(self, teacher: dict, online_params: PyTree, momentum) -> dict:
    """teacher <- momentum * teacher + (1 - momentum) * online, on the teacher's modules."""
    return dict(
      teacher, params=optim.ema_update(teacher["params"], self._select(online_params), momentum)
    )
