"""Collapse assertion for the method tests, on the library's measure (sslax.methods.siamese).

For unit vectors in D dimensions the per-dimension std averages at most 1/sqrt(D) (isotropic)
and is 0 when every input maps to one embedding; the check asks for a fraction of 1/sqrt(D).
"""

import numpy as np

from sslax.methods.siamese import embedding_std as _embedding_std


def embedding_std(z) -> float:
  return float(_embedding_std(np.asarray(z, np.float32)))


def assert_not_collapsed(z, fraction: float = 0.2) -> float:
  """Fails if the std is below `fraction` of the isotropic 1/sqrt(D); returns the std."""
  std, threshold = embedding_std(z), fraction / np.sqrt(np.shape(z)[1])
  assert std > threshold, f"embeddings collapsed: per-dimension std {std:.4g} <= {threshold:.4g}"
  return std
