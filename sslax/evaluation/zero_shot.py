"""Zero-shot classification and caption retrieval with a trained image-text model.

Zero-shot (CLIP sec. 3.1.4): every class name is put into each prompt template ("a photo of a
{label}."), the text embeddings of a class are averaged over the templates (unit vectors, then
renormalised: the prompt ensemble), and an image gets the class whose ensemble embedding is
most cosine-similar to its image embedding.

`restore_model` rebuilds the full two-tower model of a workdir's newest checkpoint, with the
tokenizer saved in the checkpoint (no training captions needed).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sslax.data import text as text_lib
from sslax.evaluation import features as features_lib


@dataclasses.dataclass
class ImageTextModelState:
  network: object  # sslax.methods.image_text.ImageTextModel
  variables: dict  # {"params", "batch_stats"} of the whole model
  tokenizer: text_lib.ByteTokenizer
  step: int


def restore_model(config, workdir: str, method) -> ImageTextModelState:
  from sslax import checkpoint
  from sslax.methods.image_text import ImageTextMethod, restore_tokenizer

  if not isinstance(method, ImageTextMethod):
    raise ValueError(
      f"--protocol zero_shot / image_text_retrieval need an image-text model "
      f"(method clip or siglip); this run's method is {config.method!r}: use knn, "
      f"linear, finetune, lowshot or retrieval."
    )
  tree, step = checkpoint.load_numpy(workdir)
  variables = {"params": tree["params"], "batch_stats": tree.get("batch_stats") or {}}
  return ImageTextModelState(
    method.network(), variables, restore_tokenizer(tree.get("method_state")), step
  )


def random_init_model(config, method, channels: int) -> ImageTextModelState:
  """The same network at its initialisation (config.seed): the baseline a run must beat."""
  network = method.network()
  variables = network.init(
    jax.random.key(config.seed),
    *method.init_inputs(config.dataset.image_size, channels),
    train=False,
  )
  return ImageTextModelState(network, dict(variables), method.tokenizer(), 0)


class _ImageTower:
  """Looks like a backbone to `features.extract_features`: images -> joint image embeddings."""

  def __init__(self, network):
    self.network = network

  def apply(self, variables, images, train=False):
    return self.network.apply(
      variables, images, train=train, method=type(self.network).encode_image
    )


def image_embeddings(
  model: ImageTextModelState, source, *, image_size: int, batch_size: int, mesh
) -> tuple[np.ndarray, np.ndarray]:
  """-> (embeddings [N, E], labels [N]) of every image of `source` (centre view)."""
  return features_lib.extract_features(
    _ImageTower(model.network),
    model.variables,
    source,
    image_size=image_size,
    batch_size=batch_size,
    mesh=mesh,
  )


def text_embeddings(
  model: ImageTextModelState, texts: Sequence[str], context_length: int, batch_size: int = 256
) -> np.ndarray:
  """-> [N, E] embeddings of `texts`, tokenized with the model's own tokenizer."""
  tokens = model.tokenizer.encode_batch(list(texts))
  return text_embeddings_of_tokens(model, tokens, context_length, batch_size)


def text_embeddings_of_tokens(
  model: ImageTextModelState, tokens, context_length: int, batch_size: int = 256
) -> np.ndarray:
  network = model.network

  @jax.jit
  def encode(t):
    t = text_lib.fit_context(t, context_length)
    return network.apply(model.variables, t, method=type(network).encode_text)

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
  model: ImageTextModelState,
  source,
  class_names: Sequence[str],
  templates: Sequence[str],
  *,
  config,
  mesh,
) -> dict:
  """Zero-shot accuracy of `model` on a labelled `source`."""
  texts = prompts(class_names, templates)
  per_prompt = text_embeddings(model, texts, config.text.context_length)
  class_emb = class_embeddings(per_prompt.reshape(len(class_names), len(templates), -1))
  image_emb, labels = image_embeddings(
    model,
    source,
    image_size=config.dataset.image_size,
    batch_size=config.eval.batch_size,
    mesh=mesh,
  )
  out = zero_shot_accuracy(image_emb, labels, class_emb)
  out.update(
    num_classes=len(class_names),
    num_templates=len(templates),
    num_images=int(len(labels)),
    chance_top1=1.0 / len(class_names),
  )
  return out
