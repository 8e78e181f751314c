"""Colour space and ab-bin targets of colorization (Zhang, Isola & Efros 2016).

* `rgb_to_lab` / `lab_to_rgb`: sRGB in [0, 1] <-> CIE L*a*b* (D65 white), from the CIE and
  sRGB (IEC 61966-2-1) definitions.
* `ab_bin_centers(grid)`: the cells of a `grid`-unit lattice of the ab plane that some sRGB
  colour falls in (any L). With the paper's grid of 10 this gives 262 bins; the paper's list
  has 313 because it was built from a looser gamut. Centres are multiples of `grid`.
* `hard_encode` / `soft_encode`: ab values -> the nearest bin, or the paper's soft encoding
  (the 5 nearest bins weighted by a Gaussian of sigma 5 in ab units).
* `rebalancing_weights`: the paper's class-rebalancing weights w ~ ((1 - lam) p~ + lam / Q)^-1,
  p~ the empirical bin distribution smoothed by a Gaussian (sigma 5), normalised so that
  E_p~[w] = 1.

Every function is pure jnp (usable inside jit) except `ab_bin_centers`, which runs once on
the host and is cached.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# sRGB primaries with the D65 white point: linear RGB -> XYZ (IEC 61966-2-1).
RGB_TO_XYZ = np.array(
  [
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
  ],
  np.float32,
)
XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ.astype(np.float64)).astype(np.float32)
D65_WHITE = np.array([0.95047, 1.0, 1.08883], np.float32)  # Xn, Yn, Zn
_DELTA = 6.0 / 29.0  # CIE's linear-segment threshold of f(t)

PAPER_GRID = 10.0  # Zhang et al.: ab quantised on a grid of 10 units
PAPER_SIGMA = 5.0  # soft-encoding and prior-smoothing Gaussian, in ab units
PAPER_NEIGHBOURS = 5
PAPER_LAMBDA = 0.5


def _srgb_to_linear(c):
  return jnp.where(c <= 0.04045, c / 12.92, ((jnp.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c):
  c = jnp.clip(c, 0.0, 1.0)
  return jnp.where(
    c <= 0.0031308, 12.92 * c, 1.055 * jnp.maximum(c, 0.0031308) ** (1 / 2.4) - 0.055
  )


def _f(t):
  # The max() keeps the unused branch finite, so gradients through jnp.where stay finite.
  return jnp.where(t > _DELTA**3, jnp.cbrt(jnp.maximum(t, _DELTA**3)), t / (3 * _DELTA**2) + 4 / 29)


def _f_inv(t):
  return jnp.where(t > _DELTA, t**3, 3 * _DELTA**2 * (t - 4 / 29))


def rgb_to_lab(rgb: jax.Array) -> jax.Array:
  """sRGB [..., 3] in [0, 1] -> L*a*b* [..., 3]: L in [0, 100], a and b roughly in [-110, 110]."""
  if rgb.shape[-1] != 3:
    raise ValueError(f"rgb_to_lab needs RGB images [..., 3], got shape {rgb.shape}.")
  xyz = _srgb_to_linear(rgb.astype(jnp.float32)) @ RGB_TO_XYZ.T
  fx, fy, fz = jnp.moveaxis(_f(xyz / D65_WHITE), -1, 0)
  return jnp.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


def lab_to_rgb(lab: jax.Array) -> jax.Array:
  """L*a*b* [..., 3] -> sRGB [..., 3], clipped to [0, 1] (out-of-gamut colours are clipped)."""
  l, a, b = jnp.moveaxis(lab.astype(jnp.float32), -1, 0)
  fy = (l + 16) / 116
  xyz = jnp.stack([_f_inv(fy + a / 500), _f_inv(fy), _f_inv(fy - b / 200)], axis=-1) * D65_WHITE
  return _linear_to_srgb(xyz @ XYZ_TO_RGB.T)


def _lab_numpy(rgb: np.ndarray) -> np.ndarray:
  """Host twin of `rgb_to_lab` (float64), used once to find the in-gamut bins."""
  lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
  t = lin @ RGB_TO_XYZ.T.astype(np.float64) / D65_WHITE
  f = np.where(t > _DELTA**3, np.cbrt(t), t / (3 * _DELTA**2) + 4 / 29)
  return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], -1)


@functools.lru_cache(maxsize=8)
def _bin_centers_cached(grid: float, samples: int) -> np.ndarray:
  # The ab values of the sRGB gamut (over all L) are the projection of the RGB cube, which is
  # the projection of its surface: sweeping the 6 faces densely finds every reachable cell.
  u = np.linspace(0.0, 1.0, samples)
  s, t = [x.ravel() for x in np.meshgrid(u, u, indexing="ij")]
  faces = []
  for axis in range(3):
    for value in (0.0, 1.0):
      cols = [s, t]
      cols.insert(axis, np.full_like(s, value))
      faces.append(np.stack(cols, -1))
  ab = _lab_numpy(np.concatenate(faces))[:, 1:]
  cells = np.unique(np.round(ab / grid).astype(np.int64), axis=0)
  return (cells * grid).astype(np.float32)


def ab_bin_centers(grid: float = PAPER_GRID, samples: int = 256) -> np.ndarray:
  """[Q, 2] centres (a, b) of the in-gamut cells of a `grid`-unit lattice, sorted by (a, b)."""
  if not grid > 0:
    raise ValueError(f"ab grid size must be positive, got {grid}; the paper uses {PAPER_GRID}.")
  return _bin_centers_cached(float(grid), int(samples))


def _sq_distances(ab: jax.Array, centers: jax.Array) -> jax.Array:
  """ab [..., 2], centers [Q, 2] -> squared distances [..., Q]."""
  return jnp.sum((ab[..., None, :] - centers) ** 2, axis=-1)


def hard_encode(ab: jax.Array, centers) -> jax.Array:
  """ab [..., 2] -> int32 [...] index of the nearest bin centre."""
  return jnp.argmin(_sq_distances(ab, jnp.asarray(centers)), axis=-1).astype(jnp.int32)


def soft_encode(
  ab: jax.Array, centers, *, num_neighbours: int = PAPER_NEIGHBOURS, sigma: float = PAPER_SIGMA
) -> jax.Array:
  """ab [..., 2] -> [..., Q] distribution on the `num_neighbours` nearest bins, weights
  proportional to exp(-d^2 / (2 sigma^2)) (the paper: 5 neighbours, sigma 5)."""
  d2 = _sq_distances(ab, jnp.asarray(centers))
  neg_d2, idx = jax.lax.top_k(-d2, num_neighbours)  # [..., k]
  w = jax.nn.softmax(neg_d2 / (2 * sigma**2), axis=-1)  # normalised Gaussian weights
  return jnp.sum(jax.nn.one_hot(idx, d2.shape[-1], dtype=w.dtype) * w[..., None], axis=-2)


def smooth_distribution(p: jax.Array, centers, sigma: float = PAPER_SIGMA) -> jax.Array:
  """[Q] distribution over bins -> [Q], convolved with a Gaussian of `sigma` in the ab plane."""
  kernel = jnp.exp(-_sq_distances(jnp.asarray(centers), jnp.asarray(centers)) / (2 * sigma**2))
  smoothed = kernel @ p
  return smoothed / jnp.sum(smoothed)


def rebalancing_weights(
  counts: jax.Array, centers, *, lam: float = PAPER_LAMBDA, sigma: float = PAPER_SIGMA
) -> jax.Array:
  """Bin counts [Q] -> class-rebalancing weights [Q] (Zhang et al. eq. 4).

  w ~ ((1 - lam) p~ + lam / Q)^-1, p~ = the smoothed empirical distribution; scaled so that
  sum_q p~_q w_q = 1 (the weighted loss keeps the unweighted loss's scale).
  """
  counts = jnp.asarray(counts, jnp.float32)
  q = counts.shape[-1]
  p = smooth_distribution(counts / jnp.maximum(jnp.sum(counts), 1e-12), centers, sigma)
  w = 1.0 / ((1 - lam) * p + lam / q)
  return w / jnp.sum(p * w)
