"""A collapse check shared by the method tests: spread of L2-normalised embeddings.

For unit vectors in D dimensions the per-dimension variances sum to 1 - |mean|^2, so the mean
per-dimension std is at most 1/sqrt(D) (isotropic embeddings) and 0 when every input maps to
the same embedding (complete collapse). The check asks for a fraction of the isotropic value.
"""
import numpy as np


def embedding_std(z) -> float:
  """[N, D] embeddings -> mean over dimensions of the std over samples, after L2 normalising."""
  z = np.asarray(z, np.float64)
  z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
  return float(np.mean(np.std(z, axis=0)))


def assert_not_collapsed(z, fraction: float = 0.2) -> float:
  """Fails if the std is below `fraction` of the isotropic 1/sqrt(D); returns the std."""
  std, threshold = embedding_std(z), fraction / np.sqrt(np.shape(z)[1])
  assert std > threshold, f"embeddings collapsed: per-dimension std {std:.4g} <= {threshold:.4g}"
  return std
