"""Byte-level tokenizer for the image-text methods: no vocabulary file, no hub download.

Token ids: 0 = padding, 1..256 = the UTF-8 bytes 0..255 (+1), 257 = start of text, 258 = end
of text (EOT). A caption becomes [SOT, bytes..., EOT, PAD, ...] of a fixed length; a caption
longer than that keeps its first bytes and still ends with EOT (the text tower pools at EOT).
Every string is representable, so captions in any language, empty captions and unseen words
need no special handling, and the tokenizer is restored from its small JSON spec alone
(`to_json` / `from_json`), which is saved in the checkpoint and beside exported models.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import numpy as np

PAD, SOT, EOT = 0, 257, 258
VOCAB_SIZE = 259
KIND = "bytes"


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
  """text <-> int32 token ids [L] (see the module docstring for the id layout)."""

  context_length: int = 77
  lowercase: bool = False

  def __post_init__(self):
    if self.context_length < 2:
      raise ValueError(
        f"context_length={self.context_length} must be >= 2 (start and end tokens); CLIP uses 77."
      )

  @property
  def vocab_size(self) -> int:
    return VOCAB_SIZE

  def encode(self, text: str) -> np.ndarray:
    """-> int32 [context_length]."""
    if not isinstance(text, str):
      raise TypeError(f"captions must be str, got {type(text).__name__}: {text!r:.80}")
    if self.lowercase:
      text = text.lower()
    body = np.frombuffer(text.strip().encode("utf-8"), np.uint8).astype(np.int32) + 1
    body = body[: self.context_length - 2]  # over-long captions: keep the start, end with EOT
    out = np.full((self.context_length,), PAD, np.int32)
    out[0], out[1 : 1 + len(body)], out[1 + len(body)] = SOT, body, EOT
    return out

  def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
    """-> int32 [N, context_length]."""
    if not len(texts):
      return np.zeros((0, self.context_length), np.int32)
    return np.stack([self.encode(t) for t in texts])

  def decode(self, tokens) -> str:
    """Ids -> text (stops at EOT; padding and start tokens dropped; bad UTF-8 replaced)."""
    ids = [int(t) for t in np.asarray(tokens).reshape(-1)]
    if EOT in ids:
      ids = ids[: ids.index(EOT)]
    return bytes(t - 1 for t in ids if 1 <= t <= 256).decode("utf-8", errors="replace")

  def to_json(self) -> str:
    return json.dumps(
      {
        "kind": KIND,
        "context_length": self.context_length,
        "lowercase": self.lowercase,
        "vocab_size": VOCAB_SIZE,
        "pad": PAD,
        "sot": SOT,
        "eot": EOT,
      }
    )

  @classmethod
  def from_json(cls, text: str) -> "ByteTokenizer":
    spec = json.loads(text)
    if spec.get("kind") != KIND or spec.get("vocab_size") != VOCAB_SIZE:
      raise ValueError(
        f"tokenizer spec {spec!r:.200} is not a {KIND!r} tokenizer of vocabulary "
        f"{VOCAB_SIZE}; it was written by another version of sslax."
      )
    return cls(context_length=int(spec["context_length"]), lowercase=bool(spec["lowercase"]))

  def to_array(self) -> np.ndarray:
    """The JSON spec as uint8 [n], so it can live in a checkpointed pytree."""
    return np.frombuffer(self.to_json().encode("utf-8"), np.uint8).copy()

  @classmethod
  def from_array(cls, array) -> "ByteTokenizer":
    return cls.from_json(np.asarray(array, np.uint8).tobytes().decode("utf-8"))


def fit_context(tokens, context_length: int):
  """[N, L] token ids (jax or numpy) -> [N, context_length]: padded, or cut keeping a final EOT.

  Lets sources tokenize once at a generous length while the model's context is set by config.
  """
  import jax.numpy as jnp

  tokens = jnp.asarray(tokens)
  _, length = tokens.shape
  if length <= context_length:
    return jnp.pad(tokens, ((0, 0), (0, context_length - length)), constant_values=PAD)
  cut = tokens[:, :context_length]
  has_eot = jnp.any(cut == EOT, axis=1)
  return cut.at[:, -1].set(jnp.where(has_eot, cut[:, -1], EOT))
