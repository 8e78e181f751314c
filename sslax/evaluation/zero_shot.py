"""Zero-shot classification with a trained image-text model.

Zero-shot (CLIP sec. 3.1.4): every class name is put into each prompt template ("a photo of a
{label}."), the text embeddings of a class are averaged over the templates (unit vectors, then
renormalised: the prompt ensemble), and an image gets the class whose ensemble embedding is
most cosine-similar to its image embedding.

The model comes as an `Encoder` (sslax/evaluation/encoder.py) whose module is the image tower
and whose `text` is the text tower with the tokenizer saved in the checkpoint (no training
captions needed); `sslax.evaluate` builds it.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sslax.data import text as text_lib


def require_text_tower(enc) -> None:
  if enc.text is None:
    raise ValueError(
      f"--protocol zero_shot / image_text_retrieval need an image-text model (method clip or "
      f"siglip); encoder {enc.name!r} has no text tower: use knn, linear, finetune, lowshot or "
      f"retrieval."
    )


def image_embeddings(enc, source, *, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """-> (embeddings [N, E], labels [N]) of every image of `source` (centre view)."""
  return enc.features(source, batch_size)


def text_embeddings(enc, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
  """-> [N, E] embeddings of `texts`, tokenized with the model's own tokenizer."""
  require_text_tower(enc)
  tokens = enc.text.tokenizer.encode_batch(list(texts))
  return text_embeddings_of_tokens(enc, tokens, batch_size)


def text_embeddings_of_tokens(enc, tokens, batch_size: int = 256) -> np.ndarray:
  require_text_tower(enc)
  tower = enc.text

  @jax.jit
  def encode(t):
    return tower.encode(tower.variables, text_lib.fit_context(t, tower.context_length))

  tokens = np.asarray(tokens, np.int32)
  out = []
  for i in range(0, len(tokens), batch_size):
    chunk = tokens[i : i + batch_size]
    pad = batch_size - len(chunk)  # one shape: one compile
    chunk = np.concatenate([chunk, np.repeat(chunk[:1], pad, 0)]) if pad else chunk
    out.append(np.asarray(encode(jnp.asarray(chunk)))[: batch_size - pad])
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _unit(x, axis=-1):
  return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def class_embeddings(per_prompt: np.ndarray) -> np.ndarray:
  """[K, T, E] text embeddings of K classes x T templates -> [K, E] unit prompt ensembles."""
  return _unit(np.mean(_unit(np.asarray(per_prompt, np.float64)), axis=1))


def zero_shot_accuracy(image_emb, labels, class_emb, ks: Sequence[int] = (1, 5)) -> dict:
  """image_emb [N, E], labels [N], class_emb [K, E] -> {"top{k}": accuracy} (cosine)."""
  logits = _unit(np.asarray(image_emb, np.float64)) @ _unit(np.asarray(class_emb, np.float64)).T
  order = np.argsort(-logits, axis=1)
  out = {}
  for k in ks:
    if k <= class_emb.shape[0]:
      out[f"top{k}"] = float(np.mean(np.any(order[:, :k] == np.asarray(labels)[:, None], axis=1)))
  return out


def prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
  """Class-major list: class 0 with every template, then class 1 ..."""
  bad = [t for t in templates if "{label}" not in t]
  if bad or not templates:
    raise ValueError(
      f"config.dataset.zero_shot_templates={tuple(templates)}: every template "
      f"needs a '{{label}}' placeholder, e.g. 'a photo of a {{label}}.'."
    )
  return [t.format(label=c) for c in class_names for t in templates]


def zero_shot(
  enc, source, class_names: Sequence[str], templates: Sequence[str], *, batch_size: int
) -> dict:
  """Zero-shot accuracy of the image-text encoder `enc` on a labelled `source`."""
  texts = prompts(class_names, templates)
  per_prompt = text_embeddings(enc, texts)
  class_emb = class_embeddings(per_prompt.reshape(len(class_names), len(templates), -1))
  image_emb, labels = image_embeddings(enc, source, batch_size=batch_size)
  out = zero_shot_accuracy(image_emb, labels, class_emb)
  out.update(
    num_classes=len(class_names),
    num_templates=len(templates),
    num_images=int(len(labels)),
    chance_top1=1.0 / len(class_names),
  )
  return out
