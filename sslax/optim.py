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
GRAD_CLIP_MODES = ("global", "per_param", "per_module")
# Modules whose params carry a leading layer axis (the ViT's and MAE decoder's nn.scan stacks):
# each slice along it is one parameter for the bias/norm test and per-parameter clipping.
SCANNED_STACKS = ("blocks",)


def scaled_learning_rate(base_lr: float, batch_size: int, rule: str) -> float:
  """The peak lr: base_lr * B / 256 ("linear", SimCLR), base_lr * sqrt(B) ("sqrt") or base_lr."""
  if rule == "linear":
    return base_lr * batch_size / 256
  if rule == "sqrt":
    return base_lr * math.sqrt(batch_size)
  if rule == "none":
    return base_lr
  raise ValueError(f"Unknown optimizer.lr_scaling {rule!r}; choose one of {LR_SCALING}.")


def warmup_cosine(
  peak_lr: float, total_steps: int, warmup_steps: int, end_lr: float = 0.0, start_lr: float = 0.0
):
  """Linear warmup from start_lr to peak_lr, then cosine decay to end_lr at total_steps.

  start_lr is the lr of step 0 (SwAV's `--start_warmup`, 0.3 in its ImageNet scripts; 0 for
  every other recipe here).
  """
  warmup_steps = min(warmup_steps, total_steps)
  return optax.warmup_cosine_decay_schedule(
    init_value=start_lr,
    peak_value=peak_lr,
    warmup_steps=warmup_steps,
    decay_steps=max(total_steps, warmup_steps + 1),
    end_value=end_lr,
  )


def warmup_step_decay(
  peak_lr: float,
  warmup_steps: int,
  decay_steps,
  factor: float,
  start_lr: float = 0.0,
):
  """Linear warmup from start_lr to peak_lr, then peak_lr * factor ** (how many of `decay_steps`
  the step has reached): the step schedule of InstDisc's and CMC's reference code (lr x0.1 at
  the first step of each listed epoch)."""
  boundaries = jnp.asarray(sorted(int(s) for s in decay_steps), jnp.int32)

  def schedule(step):
    decayed = peak_lr * factor ** jnp.sum(step >= boundaries)
    if warmup_steps <= 0:
      return decayed
    warm = start_lr + (peak_lr - start_lr) * step / warmup_steps
    return jnp.where(step < warmup_steps, warm, decayed)

  return schedule


def lr_schedule(
  config: ml_collections.ConfigDict, batch_size: int, total_steps: int, steps_per_epoch
):
  """The run's lr schedule from the `optimizer` block: warmup (from `warmup_start_lr`, not
  batch-scaled, as SwAV's) to the batch-scaled peak, then cosine to `end_lr`, or, when
  `lr_decay_epochs` lists epochs, constant with a x`lr_decay_factor` drop at each of them."""
  peak_lr = scaled_learning_rate(config.base_lr, batch_size, config.lr_scaling)
  warmup_steps = int(config.warmup_epochs * steps_per_epoch)
  decay_epochs = tuple(config.get("lr_decay_epochs", ()) or ())
  if decay_epochs:
    return warmup_step_decay(
      peak_lr,
      min(warmup_steps, total_steps),
      [round(e * steps_per_epoch) for e in decay_epochs],
      config.get("lr_decay_factor", 0.1),
      config.get("warmup_start_lr", 0.0),
    )
  return warmup_cosine(
    peak_lr,
    total_steps,
    warmup_steps,
    config.end_lr,
    config.get("warmup_start_lr", 0.0),
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


def _key_name(entry) -> str:
  return str(getattr(entry, "key", getattr(entry, "name", entry)))


def _is_stacked(path) -> bool:
  """True for a leaf of an nn.scan stack (leading layer axis), see SCANNED_STACKS."""
  return any(_key_name(e) in SCANNED_STACKS for e in path[:-1])


def _per_param(fn, tree):
  """Applies fn(leaf) to each parameter: leaf by leaf, slice by slice for scanned stacks."""

  def apply(path, leaf):
    return jax.vmap(fn)(leaf) if _is_stacked(path) else fn(leaf)

  return jax.tree_util.tree_map_with_path(apply, tree)


def is_bias_or_norm(params):
  """True for biases (any leaf named "bias", e.g. the [heads, head_dim] attention biases) and
  other 1-D params (BatchNorm / LayerNorm scales, scalars); a scanned stack's layer axis does
  not count. The references' `exclude_bias_and_norm` (Barlow Twins, MoCo v3 LARS: p.ndim == 1;
  DINO: name ends in .bias or 1-D; SimCLR / BYOL: biases and BN)."""

  def test(path, p):
    ndim = p.ndim - (1 if _is_stacked(path) else 0)
    return _key_name(path[-1]) == "bias" or ndim <= 1

  return jax.tree_util.tree_map_with_path(test, params)


def decay_mask(params):
  """True for weights that get weight decay / LARS adaptation: not biases, not norm params."""
  return jax.tree.map(lambda b: not b, is_bias_or_norm(params))


def weight_decay_mask(config: ml_collections.ConfigDict):
  """params -> mask of the params that get weight decay (and LARS adaptation).

  `optimizer.exclude_bias_and_norm` True (default): `decay_mask`. False: every param, as
  PyTorch's plain `weight_decay` (MoCo v2, SimSiam, MoCo v3's AdamW) and SwAV's LARC do.
  """
  if config.get("exclude_bias_and_norm", True):
    return decay_mask
  return lambda params: jax.tree.map(lambda _: True, params)


def clip_per_param(max_norm: float) -> optax.GradientTransformation:
  """Scales each parameter's gradient to L2 norm at most max_norm (DINO's
  `utils.clip_gradients`: coefficient max_norm / (norm + 1e-6) where below 1)."""

  def clip(g):
    norm = jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32))))
    coef = jnp.minimum(max_norm / (norm + 1e-6), 1.0)
    return (g * coef).astype(g.dtype)

  def update(updates, state, params=None):
    return _per_param(clip, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def clip_per_module(max_norm: float) -> optax.GradientTransformation:
  """Clips the gradient of each top-level module (each key of the params dict: backbone,
  heads ...) to global L2 norm max_norm on its own: DINOv2's `clip_grad_norm_` called on each
  of its student's submodules."""
  clip = optax.clip_by_global_norm(max_norm)

  def update(updates, state, params=None):
    if not isinstance(updates, dict):
      return clip.update(updates, optax.EmptyState())[0], state
    return {k: clip.update(v, optax.EmptyState())[0] for k, v in updates.items()}, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def scale_by_multipliers(multipliers) -> optax.GradientTransformation:
  """Multiplies each update by a per-parameter factor: a per-parameter learning rate (applied
  after the optimizer, so weight decay is scaled too, as a PyTorch param group's lr scales it).

  multipliers: params -> tree of scalars (or arrays broadcastable against each leaf, e.g. per
  layer of a scanned stack), e.g. layer-wise lr decay.
  """

  def update(updates, state, params=None):
    del params
    scales = multipliers(updates)
    return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _scale_bias_and_norm(ratio: float) -> optax.GradientTransformation:
  """Multiplies the final update of biases and norm params by ratio: their lr is ratio x the
  weights' at every step (every optimizer here is linear in its lr)."""

  def update(updates, state, params=None):
    mask = is_bias_or_norm(updates)
    return jax.tree.map(lambda u, m: u * ratio if m else u, updates, mask), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config: ml_collections.ConfigDict, schedule) -> optax.GradientTransformation:
  """config: the `optimizer` block (name, weight_decay, momentum, ...).

  Per-group settings: `exclude_bias_and_norm` (see `weight_decay_mask`), `bias_lr_ratio` (the
  lr of biases and norm params relative to the weights': Barlow Twins 0.0048 / 0.2), and the
  gradient clip `grad_clip_norm` by global norm or per parameter (`grad_clip_mode`).
  """
  name = config.name
  mask = weight_decay_mask(config)
  if name == "sgd":
    tx = optax.chain(
      optax.add_decayed_weights(config.weight_decay, mask=mask),
      optax.sgd(schedule, momentum=config.momentum, nesterov=config.get("nesterov", False)),
    )
  elif name == "lars":
    tx = optax.lars(
      schedule,
      weight_decay=config.weight_decay,
      weight_decay_mask=mask,
      trust_coefficient=config.get("trust_coefficient", 1e-3),
      trust_ratio_mask=mask,
      momentum=config.momentum,
    )
  elif name == "adamw":
    tx = optax.adamw(
      schedule,
      b1=config.get("b1", 0.9),
      b2=config.get("b2", 0.999),
      eps=config.get("eps", 1e-8),
      weight_decay=config.weight_decay,
      mask=mask,
    )
  else:
    raise ValueError(f"Unknown optimizer.name {name!r}; choose one of {OPTIMIZERS}.")
  ratio = config.get("bias_lr_ratio", 1.0)
  if ratio != 1.0:
    tx = optax.chain(tx, _scale_bias_and_norm(ratio))
  clip_norm, mode = config.get("grad_clip_norm", 0.0), config.get("grad_clip_mode", "global")
  if mode not in GRAD_CLIP_MODES:
    raise ValueError(f"Unknown optimizer.grad_clip_mode {mode!r}; choose one of {GRAD_CLIP_MODES}.")
  if clip_norm:
    clip = {
      "global": optax.clip_by_global_norm,
      "per_param": clip_per_param,
      "per_module": clip_per_module,
    }[mode](clip_norm)
    tx = optax.chain(clip, tx)
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


def with_constant_lr(
  tx: optax.GradientTransformation, config: ml_collections.ConfigDict, lr: float, selected
) -> optax.GradientTransformation:
  """tx, except that params where selected(params) is True train with the same optimizer at the
  constant lr `lr` (SimSiam's `--fix-pred-lr`: the predictor stays at the peak lr while the
  rest follows the schedule). The two groups have separate optimizer state
  (optax.multi_transform), so a configured global-norm clip sees them separately.
  """
  constant = make_optimizer(config, optax.constant_schedule(lr))
  labels = lambda params: jax.tree.map(lambda s: "constant" if s else "scheduled", selected(params))
  return optax.multi_transform({"scheduled": tx, "constant": constant}, labels)
