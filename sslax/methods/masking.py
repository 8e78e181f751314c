"""Block-wise masking of ViT patch grids (BEiT, Bao et al. 2021; iBOT and DINOv2 reuse it).

The algorithm is the reference `MaskingGenerator` (microsoft/unilm `beit/masking_generator.py`,
copied into facebookresearch/dinov2 `dinov2/data/masking.py`), as pure JAX so that masks are
made inside the jitted, sharded train step instead of by a per-process data loader:

  while the mask has fewer than `num_masked` patches:           (a "round")
    cap = min(num_masked - masked so far, max_num_patches)
    up to `max_attempts` times:                                  (an "attempt")
      area ~ U[min_num_patches, cap], aspect = exp(U[log min_aspect, log max_aspect])
      h, w = round(sqrt(area * aspect)), round(sqrt(area / aspect))   (round half to even)
      if h < grid_h and w < grid_w (a block is smaller than the grid):
        top ~ U{0..grid_h - h}, left ~ U{0..grid_w - w}
        if 0 < newly masked patches of the block <= cap: mask the block, end the round
    a round that masks nothing ends the loop.

So the count never exceeds `num_masked`, and it can fall short of it (the reference's behaviour:
when a round's attempts cannot place a block, masking stops).

All randomness is 4 uniforms per attempt, drawn in one place (`block_mask_uniforms`: round r
uses `jax.random.fold_in(rng, r)`), mapped to the reference's draws as Python's `random` does
(`uniform(a, b) = a + (b - a) u`, `randint(a, b) = a + floor(u (b - a + 1))`).
`block_mask_from_uniforms` takes a table of such draws, which is what tests compare with a
NumPy port of the reference. The attempts of one round all see the same mask (it only changes
when an attempt is accepted), so they are evaluated together and the first accepted one is
applied: a `lax.while_loop` over at most grid_h * grid_w rounds (each accepted round adds at
least one patch), with no inner loop. Grid sizes are static; `num_masked` may be traced, so the
functions vmap over samples with per-sample counts.

Batches (`dinov2_masks`, `beit_masks`) are made for the *global* batch from one rng: call them
inside the jitted step with the step's rng (the global batch is one jax.Array sharded over the
mesh). The masks are then a function of (rng, batch size) only, the same on 1 device or 8;
constrain the result to the batch sharding (`jax.lax.with_sharding_constraint`) to keep each
device's rows on that device.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Uniforms per attempt: target area, log aspect ratio, top, left (the last two are unused when
# the block does not fit, where the reference draws nothing).
DRAWS_PER_ATTEMPT = 4


def _is_number(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_grid(grid_h, grid_w) -> int:
  for name, value in (("grid_h", grid_h), ("grid_w", grid_w)):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 2:
      raise ValueError(
        f"{name}={value!r}: block masking needs an integer patch-grid side >= 2 (a block must "
        f"be smaller than the grid in both directions, so a side of 1 can never be masked); "
        f"pass image_size // patch_size."
      )
  return int(grid_h) * int(grid_w)


def _check_block_args(
  num_patches, grid_h, grid_w, min_num_patches, max_num_patches, min_aspect, max_aspect, attempts
):
  """Validates the block shape arguments; returns (cap, (log min_aspect, log max_aspect))."""
  grid = f"{grid_h}x{grid_w} grid ({num_patches} patches)"
  if not _is_number(min_num_patches) or not 0 < min_num_patches <= num_patches:
    raise ValueError(
      f"min_num_patches={min_num_patches!r} must be in (0, {num_patches}] for a {grid}; it is "
      f"the smallest block area drawn (BEiT uses 16 on a 14x14 grid, DINOv2 4)."
    )
  if max_num_patches is not None and (not _is_number(max_num_patches) or max_num_patches < 1):
    raise ValueError(
      f"max_num_patches={max_num_patches!r} must be None (no cap beyond num_masked) or >= 1: "
      f"it caps the patches one block may add."
    )
  if not _is_number(min_aspect) or min_aspect <= 0:
    raise ValueError(f"min_aspect={min_aspect!r} must be a positive number (the reference: 0.3).")
  if max_aspect is None:
    max_aspect = 1 / min_aspect
  if not _is_number(max_aspect) or max_aspect < min_aspect:
    raise ValueError(
      f"max_aspect={max_aspect!r} must be None (1 / min_aspect) or >= min_aspect={min_aspect}."
    )
  if not isinstance(attempts, numbers.Integral) or isinstance(attempts, bool) or attempts < 1:
    raise ValueError(f"max_attempts={attempts!r} must be an integer >= 1 (the reference: 10).")
  cap = math.inf if max_num_patches is None else float(max_num_patches)
  return cap, (math.log(min_aspect), math.log(max_aspect))


def _check_num_masked(num_masked, num_patches: int, grid: str) -> None:
  """A Python count is checked; a traced one cannot be (below 0 masks nothing, above N stops
  when no block can be added)."""
  if isinstance(num_masked, (jax.Array, np.ndarray)):
    return
  if (
    not isinstance(num_masked, numbers.Integral)
    or isinstance(num_masked, bool)
    or not 0 <= num_masked <= num_patches
  ):
    raise ValueError(
      f"num_masked={num_masked!r} must be an integer in [0, {num_patches}] for a {grid} "
      f"(BEiT masks 75 of 196 patches)."
    )


def _round_uniforms(rng: jax.Array, round_index, max_attempts: int) -> jax.Array:
  """The draws of one round: [max_attempts, DRAWS_PER_ATTEMPT] uniforms in [0, 1)."""
  return jax.random.uniform(
    jax.random.fold_in(rng, round_index), (max_attempts, DRAWS_PER_ATTEMPT), jnp.float32
  )


def block_mask_uniforms(rng: jax.Array, num_rounds: int, max_attempts: int = 10) -> jax.Array:
  """The table of uniforms `block_mask(rng, ...)` consumes: [num_rounds, max_attempts, 4].

  Row r holds round r's draws; attempt a uses (area, aspect, top, left) = row[r, a]. A mask
  needs at most grid_h * grid_w rounds. `block_mask` draws a round's row only when it runs it.
  """
  rounds = jnp.arange(num_rounds, dtype=jnp.uint32)
  return jax.vmap(lambda r: _round_uniforms(rng, r, max_attempts))(rounds)


def _block_mask(
  draw: Callable[[jax.Array], jax.Array],
  max_rounds: int,
  grid_h: int,
  grid_w: int,
  num_masked,
  min_num_patches: float,
  cap: float,
  log_aspect: tuple[float, float],
) -> jax.Array:
  """The reference algorithm; draw(round) -> [attempts, 4] uniforms. Returns [grid_h, grid_w]."""
  num_masked = jnp.asarray(num_masked, jnp.int32)
  rows = jnp.arange(grid_h, dtype=jnp.int32)[None, :, None]
  cols = jnp.arange(grid_w, dtype=jnp.int32)[None, None, :]
  log_lo, log_hi = log_aspect

  def more(state):
    round_index, count, _, stalled = state
    return (round_index < max_rounds) & (count < num_masked) & ~stalled

  def one_round(state):
    round_index, count, mask, _ = state
    u = draw(round_index)  # [A, 4]
    limit = jnp.minimum((num_masked - count).astype(jnp.float32), cap)
    area = min_num_patches + u[:, 0] * (limit - min_num_patches)
    aspect = jnp.exp(log_lo + u[:, 1] * (log_hi - log_lo))
    h = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)  # half to even, as Python's round
    w = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (h < grid_h) & (w < grid_w)
    # randint(0, n - 1) = floor(u * n); min() only guards u * n rounding up to n in float32.
    top = jnp.minimum(jnp.floor(u[:, 2] * (grid_h - h + 1)).astype(jnp.int32), grid_h - h)
    left = jnp.minimum(jnp.floor(u[:, 3] * (grid_w - w + 1)).astype(jnp.int32), grid_w - w)
    top, left, h, w = (x[:, None, None] for x in (top, left, h, w))
    blocks = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)  # [A, H, W]
    added = jnp.sum(blocks & ~mask, axis=(1, 2))
    accepted = fits & (added > 0) & (added <= limit)
    first = jnp.argmax(accepted)  # the first accepted attempt ends the round
    placed = accepted[first]
    mask = jnp.where(placed, mask | blocks[first], mask)
    count = count + jnp.where(placed, added[first], 0)
    return round_index + 1, count, mask, ~placed

  start = (jnp.int32(0), jnp.int32(0), jnp.zeros((grid_h, grid_w), bool), jnp.bool_(False))
  return jax.lax.while_loop(more, one_round, start)[2]


def block_mask(
  rng: jax.Array,
  grid_h: int,
  grid_w: int,
  num_masked,
  *,
  min_num_patches: float,
  max_num_patches: float | None,
  min_aspect: float,
  max_aspect: float | None = None,
  max_attempts: int = 10,
) -> jax.Array:
  """One sample's block mask: [grid_h, grid_w] bool, True = masked, at most num_masked True.

  Args:
    rng: a `jax.random.key`.
    grid_h, grid_w: the static patch grid (image size // patch size).
    num_masked: the target count, a Python int or a traced int32 scalar (vmap over samples).
    min_num_patches: smallest block area drawn (BEiT pretraining: 16; DINOv2: 4).
    max_num_patches: most patches one block may add; None = no cap beyond num_masked (BEiT).
      DINOv2 uses half the grid.
    min_aspect, max_aspect: block aspect ratio range, log-uniform; max_aspect None means
      1 / min_aspect (the reference: 0.3 .. 3.33).
    max_attempts: block placements tried per round before masking stops (the reference: 10).
  """
  num_patches = _check_grid(grid_h, grid_w)
  _check_num_masked(num_masked, num_patches, f"{grid_h}x{grid_w} grid")
  cap, log_aspect = _check_block_args(
    num_patches,
    grid_h,
    grid_w,
    min_num_patches,
    max_num_patches,
    min_aspect,
    max_aspect,
    max_attempts,
  )
  draw = lambda r: _round_uniforms(rng, r, max_attempts)
  return _block_mask(
    draw, num_patches, grid_h, grid_w, num_masked, float(min_num_patches), cap, log_aspect
  )


def block_mask_from_uniforms(
  uniforms: jax.Array,
  grid_h: int,
  grid_w: int,
  num_masked,
  *,
  min_num_patches: float,
  max_num_patches: float | None,
  min_aspect: float,
  max_aspect: float | None = None,
) -> jax.Array:
  """`block_mask` with its draws given: uniforms [rounds, attempts, 4] in [0, 1) -> [H, W] bool.

  Round r uses uniforms[r] (attempts = uniforms.shape[1]); masking stops after `rounds` rounds,
  so pass grid_h * grid_w rounds to never cut it short. block_mask(rng, ...) equals
  block_mask_from_uniforms(block_mask_uniforms(rng, grid_h * grid_w, attempts), ...).
  """
  num_patches = _check_grid(grid_h, grid_w)
  _check_num_masked(num_masked, num_patches, f"{grid_h}x{grid_w} grid")
  if uniforms.ndim != 3 or uniforms.shape[2] != DRAWS_PER_ATTEMPT or uniforms.shape[0] < 1:
    raise ValueError(
      f"uniforms has shape {uniforms.shape}; expected [rounds >= 1, attempts, "
      f"{DRAWS_PER_ATTEMPT}] (see block_mask_uniforms)."
    )
  cap, log_aspect = _check_block_args(
    num_patches,
    grid_h,
    grid_w,
    min_num_patches,
    max_num_patches,
    min_aspect,
    max_aspect,
    uniforms.shape[1],
  )
  uniforms = jnp.asarray(uniforms, jnp.float32)
  draw = lambda r: uniforms[r]
  return _block_mask(
    draw,
    uniforms.shape[0],
    grid_h,
    grid_w,
    num_masked,
    float(min_num_patches),
    cap,
    log_aspect,
  )


def _check_batch(batch) -> None:
  if not isinstance(batch, numbers.Integral) or isinstance(batch, bool) or batch < 1:
    raise ValueError(f"batch={batch!r} must be a positive integer (the global batch size).")


def _check_fraction(name: str, value) -> None:
  if not _is_number(value) or not 0 <= value <= 1:
    raise ValueError(f"{name}={value!r} must be a number in [0, 1].")


def dinov2_mask_counts(
  rng: jax.Array,
  batch: int,
  num_patches: int,
  *,
  mask_probability: float = 0.5,
  ratio_min_max: Sequence[float] = (0.1, 0.5),
) -> jax.Array:
  """DINOv2's per-sample mask targets (`collate_data_and_cast`): [batch] int32, shuffled.

  n = int(batch * mask_probability) samples get floor(num_patches * r_i), r_i ~ U[b_i, b_{i+1}]
  with b = linspace(ratio_min, ratio_max, n + 1) (one bin each, spreading ratios evenly); the
  other samples get 0. The order is a random permutation, as the reference shuffles its masks.
  """
  _check_batch(batch)
  _check_fraction("mask_probability", mask_probability)
  if len(ratio_min_max) != 2:
    raise ValueError(f"ratio_min_max={ratio_min_max!r} must be a pair (min, max), e.g. (0.1, 0.5).")
  lo, hi = ratio_min_max
  _check_fraction("ratio_min_max[0]", lo)
  _check_fraction("ratio_min_max[1]", hi)
  if lo > hi:
    raise ValueError(f"ratio_min_max={tuple(ratio_min_max)!r}: min must not exceed max.")
  n_masked = int(batch * mask_probability)
  edges = jnp.asarray(np.linspace(lo, hi, n_masked + 1), jnp.float32)
  ratio_rng, order_rng = jax.random.split(rng)
  u = jax.random.uniform(ratio_rng, (n_masked,), jnp.float32)
  ratios = edges[:-1] + u * (edges[1:] - edges[:-1])
  counts = jnp.floor(num_patches * ratios).astype(jnp.int32)
  counts = jnp.concatenate([counts, jnp.zeros((batch - n_masked,), jnp.int32)])
  return jax.random.permutation(order_rng, counts)


def dinov2_masks(
  rng: jax.Array,
  batch: int,
  grid_h: int,
  grid_w: int,
  *,
  mask_probability: float = 0.5,
  ratio_min_max: Sequence[float] = (0.1, 0.5),
  min_num_patches: float = 4,
  max_num_patches: float | None = None,
  min_aspect: float = 0.3,
  max_aspect: float | None = None,
  max_attempts: int = 10,
) -> jax.Array:
  """DINOv2's iBOT masks for a global batch: [batch, grid_h * grid_w] bool, row-major patches.

  `batch` counts the images masked together: in DINOv2 that is every global crop of the batch
  (2 x images), shuffled together; the rows come in random order, so how the crops are stacked
  does not matter. DINOv2's loss weights (1 / masked patches of the row) follow from the mask. Targets come
  from `dinov2_mask_counts` (defaults: ibot.mask_sample_probability 0.5, mask_ratio_min_max
  (0.1, 0.5) of dinov2/configs/ssl_default_config.yaml); each row is one `block_mask`.
  max_num_patches None is the reference's `0.5 * img_size // patch_size * img_size //
  patch_size` (dinov2/train/train.py) for img_size = grid * patch: (grid_h // 2) * grid_w, half
  the grid when grid_h is even (e.g. 666 of 1369 patches for a 37x37 grid).

  With count_rng, mask_rng = jax.random.split(rng), row i is block_mask(jax.random.split(
  mask_rng, batch)[i], ..., counts[i]) for counts = dinov2_mask_counts(count_rng, ...).

  The masks depend only on (rng, batch) and the static arguments: call this inside the jitted
  step with the step's rng, for the global batch; the result is the same on any device count.
  """
  num_patches = _check_grid(grid_h, grid_w)
  if max_num_patches is None:
    max_num_patches = (grid_h // 2) * grid_w
  count_rng, mask_rng = jax.random.split(rng)
  counts = dinov2_mask_counts(
    count_rng,
    batch,
    num_patches,
    mask_probability=mask_probability,
    ratio_min_max=ratio_min_max,
  )
  kwargs = {
    "min_num_patches": min_num_patches,
    "max_num_patches": max_num_patches,
    "min_aspect": min_aspect,
    "max_aspect": max_aspect,
    "max_attempts": max_attempts,
  }
  masks = jax.vmap(lambda k, n: block_mask(k, grid_h, grid_w, n, **kwargs))(
    jax.random.split(mask_rng, batch), counts
  )
  return masks.reshape(batch, num_patches)


def beit_masks(
  rng: jax.Array,
  batch: int,
  grid_h: int,
  grid_w: int,
  num_masked: int,
  *,
  min_num_patches: float = 16,
  max_num_patches: float | None = None,
  min_aspect: float = 0.3,
  max_aspect: float | None = None,
  max_attempts: int = 10,
) -> jax.Array:
  """BEiT's masks for a global batch: [batch, grid_h * grid_w] bool, row-major patches.

  Row i is block_mask(jax.random.split(rng, batch)[i], ..., num_masked); the defaults are BEiT
  pretraining's (beit/run_beit_pretraining.py: --num_mask_patches 75 of 14x14,
  --min_mask_patches_per_block 16, --max_mask_patches_per_block None; aspect 0.3).

  The masks depend only on (rng, batch) and the static arguments: call this inside the jitted
  step with the step's rng, for the global batch; the result is the same on any device count.
  """
  _check_batch(batch)
  num_patches = _check_grid(grid_h, grid_w)
  _check_num_masked(num_masked, num_patches, f"{grid_h}x{grid_w} grid")
  kwargs = {
    "min_num_patches": min_num_patches,
    "max_num_patches": max_num_patches,
    "min_aspect": min_aspect,
    "max_aspect": max_aspect,
    "max_attempts": max_attempts,
  }
  masks = jax.vmap(lambda k: block_mask(k, grid_h, grid_w, num_masked, **kwargs))(
    jax.random.split(rng, batch)
  )
  return masks.reshape(batch, num_patches)
