"""Optimizers and schedules chosen by name from `config.optimizer` / `config.schedule`."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("sgd", "lars", "adamw")
LR_SCALING = ("linear", "sqrt", "none")


def scaled_learning_rate(base_lr: float, batch_size: int, rule: str) -> float:
  """The peak lr: base_lr * B / 256 ("linear", SimCLR), base_lr * sqrt(B) ("sqrt") or base_lr."""
  if rule == "linear":
    return base_lr * batch_size / 256
  if rule == "sqrt":
    return base_lr * math.sqrt(batch_size)
  if rule == "none":
    return base_lr
  raise ValueError(f"Unknown optimizer.lr_scaling {rule!r}; choose one of {LR_SCALING}.")


def warmup_cosine(peak_lr: float, total_steps: int, warmup_steps: int, end_lr: float = 0.0):
  """Linear warmup from 0 to peak_lr, then cosine decay to end_lr at total_steps."""
  warmup_steps = min(warmup_steps, total_steps)
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=peak_lr,
    warmup_steps=warmup_steps,
    decay_steps=max(total_steps, warmup_steps + 1),
    end_value=end_lr,
  )


def cosine_increase(start: float, end: float, total_steps: int):
  """BYOL's EMA momentum: end - (end - start) * (cos(pi * k / K) + 1) / 2; equals `end` at K."""

  def schedule(step):
    progress = jnp.clip(step / max(total_steps, 1), 0.0, 1.0)
    return end - (end - start) * (jnp.cos(jnp.pi * progress) + 1) / 2

  return schedule


def ema_update(target, online, momentum):
  """Momentum (EMA) teacher update: target <- momentum * target + (1 - momentum) * online."""
  return jax.tree.map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)


def decay_mask(params):
  """True for weights that get weight decay / LARS adaptation: not biases, not norm scales.

  SimCLR and BYOL exclude every 1-D parameter (biases, BatchNorm/LayerNorm scale and bias).
  """
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config: ml_collections.ConfigDict, schedule) -> optax.GradientTransformation:
  """config: the `optimizer` block (name, weight_decay, momentum, ...)."""
  name = config.name
  if name == "sgd":
    tx = optax.chain(
      optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
      optax.sgd(schedule, momentum=config.momentum, nesterov=config.get("nesterov", False)),
    )
  elif name == "lars":
    tx = optax.lars(
      schedule,
      weight_decay=config.weight_decay,
      weight_decay_mask=decay_mask,
      trust_coefficient=config.get("trust_coefficient", 1e-3),
      trust_ratio_mask=decay_mask,
      momentum=config.momentum,
    )
  elif name == "adamw":
    tx = optax.adamw(
      schedule,
      b1=config.get("b1", 0.9),
      b2=config.get("b2", 0.999),
      weight_decay=config.weight_decay,
      mask=decay_mask,
    )
  else:
    raise ValueError(f"Unknown optimizer.name {name!r}; choose one of {OPTIMIZERS}.")
  if config.get("grad_clip_norm", 0.0):
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx


class _StartAfterState(NamedTuple):
  count: jax.Array  # updates seen so far (saturates at the delay)
  inner: optax.OptState


def _start_after(
  inner: optax.GradientTransformation, num_steps: int
) -> optax.GradientTransformation:
  """inner, but its first num_steps updates are zero and leave inner's state untouched, except
  the lr schedule's step counter, which keeps counting."""

  def init(params):
    return _StartAfterState(jnp.zeros([], jnp.int32), inner.init(params))

  def update(updates, state, params=None):
    new_updates, new_inner = inner.update(updates, state.inner, params)
    active = state.count >= num_steps
    new_updates = jax.tree.map(lambda u: jnp.where(active, u, jnp.zeros_like(u)), new_updates)
    held = jax.tree.map(lambda n, o: jnp.where(active, n, o), new_inner, state.inner)
    # The lr schedule is global (a PyTorch scheduler steps every param group), so its step
    # counter keeps running while frozen; the moments and Adam's bias-correction count start
    # at the first unfrozen step, as for a param whose .grad was None.
    is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)
    new_inner = jax.tree.map(
      lambda h, n: n if is_schedule(n) else h, held, new_inner, is_leaf=is_schedule
    )
    return new_updates, _StartAfterState(jnp.minimum(state.count + 1, num_steps), new_inner)

  return optax.GradientTransformation(init, update)


def freeze_for_steps(tx: optax.GradientTransformation, frozen, num_steps: int):
  """tx, except that params where frozen(params) is True stay untouched for num_steps updates.

  Like a PyTorch param whose .grad is None (SwAV's freeze_prototypes_niters, DINO's
  freeze_last_layer): no update, no weight decay, no momentum or Adam moments accumulate, and
  its optimizer state starts at the first unfrozen step. The frozen params get their own copy
  of tx's state (optax.multi_transform), so a configured global-norm clip sees the two groups
  separately.
  """
  if num_steps <= 0:
    return tx
  labels = lambda params: jax.tree.map(lambda f: "frozen" if f else "trained", frozen(params))
  return optax.multi_transform({"trained": tx, "frozen": _start_after(tx, num_steps)}, labels)
