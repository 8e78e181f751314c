"""Image -> text and text -> image retrieval Recall@K on held-out (image, caption) pairs.

Each image's own caption is its one correct text (and vice versa), as in the CLIP paper's
Flickr30k / MS-COCO retrieval evaluation; similarity is the cosine of the joint embeddings.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def recall_at_k(similarity: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
  """similarity [N, N] (query i's correct item is i) -> {k: fraction of queries whose correct
  item is among their k most similar}. Ties count against the query (pessimistic rank)."""
  n = similarity.shape[0]
  correct = similarity[np.arange(n), np.arange(n)]
  rank = np.sum(similarity >= correct[:, None], axis=1) - 1  # 0 = ranked first
  return {int(k): float(np.mean(rank < k)) for k in ks}


def image_text_retrieval(image_emb, text_emb, ks: Sequence[int] = (1, 5, 10)) -> dict:
  """image_emb, text_emb: [N, E], row i of each is a pair -> {"image_to_text_R@k",
  "text_to_image_R@k", "num_pairs", "chance_R@k" (k / N)}."""
  image_emb, text_emb = _unit(image_emb), _unit(text_emb)
  if image_emb.shape != text_emb.shape:
    raise ValueError(
      f"image embeddings {image_emb.shape} and text embeddings {text_emb.shape} "
      f"must have the same shape [N, E] (one caption per image)."
    )
  sim = image_emb @ text_emb.T
  out = {"num_pairs": int(sim.shape[0])}
  for k, v in recall_at_k(sim, ks).items():
    out[f"image_to_text_R@{k}"] = v
  for k, v in recall_at_k(sim.T, ks).items():
    out[f"text_to_image_R@{k}"] = v
  for k in ks:
    out[f"chance_R@{k}"] = min(1.0, k / sim.shape[0])
  return out
