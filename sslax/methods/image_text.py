"""What CLIP and SigLIP share: the two-tower network, the batch wiring, the tokenizer state.

The network maps images [B, S, S, C] and caption tokens [B, L] to embeddings [B, E] through
an image tower (`backbone`, any `config.model`, + a linear projection) and a text transformer
(`config.text`, + a linear projection), and owns the learnable logit scale (and SigLIP's bias).
The batch's captions arrive as byte tokens from the image-text source and are cut or padded to
`config.text.context_length`. The tokenizer's JSON spec is kept in the method state, so it is
saved in every checkpoint and evaluation / export restore it without the training captions.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslax import sharding
from sslax.data import text as text_lib
from sslax.data.augment import ViewSpec
from sslax.methods.base import Method
from sslax.models import get_dtype, make_backbone
from sslax.models.text import POOLINGS, TextTransformer


class ImageTextModel(nn.Module):
  """(images [B, S, S, C], tokens [B, L]) -> (image embeddings [B, E], text embeddings [B, E])."""

  backbone: nn.Module
  text: nn.Module
  embed_dim: int
  init_log_scale: float
  init_bias: float | None = None  # None: no bias parameter (CLIP)
  dtype: Any = jnp.float32

  def setup(self):
    self.image_proj = nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype)
    self.text_proj = nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype)
    self.log_scale = self.param("log_scale", nn.initializers.constant(self.init_log_scale), ())
    if self.init_bias is not None:
      self.logit_bias = self.param("logit_bias", nn.initializers.constant(self.init_bias), ())

  def encode_image(self, images, train: bool = False):
    return self.image_proj(self.backbone(images, train=train)).astype(jnp.float32)

  def encode_text(self, tokens, train: bool = False):
    return self.text_proj(self.text(tokens, train=train)).astype(jnp.float32)

  def __call__(self, images, tokens, train: bool = True):
    return self.encode_image(images, train), self.encode_text(tokens, train)


class ImageTextMethod(Method):
  """Base of clip / siglip; subclasses set `name`, the init of the logit parameters and
  `pair_loss(image_emb, text_emb, params, axis_name) -> (loss, metrics)`."""

  init_log_scale: ClassVar[float]
  init_bias: ClassVar[float | None] = None

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        embed_dim=512,  # joint embedding width (CLIP ViT-B/32: 512)
        chunked_loss=False,  # True: ring exchange, per-device memory independent of B
      )
    )

  def tokenizer(self) -> text_lib.ByteTokenizer:
    return text_lib.ByteTokenizer(context_length=self.config.text.context_length)

  def views(self):
    aug, size = self.config.augment, self.config.dataset.image_size
    # One view per pair: the caption is the other "view".
    return (ViewSpec.from_config(aug, size),)

  def network(self):
    t, dtype = self.config.text, get_dtype(self.config.dtype)
    if t.pooling not in POOLINGS:
      raise ValueError(f"config.text.pooling={t.pooling!r}; choose one of {POOLINGS}.")
    if t.width % t.heads:
      raise ValueError(
        f"config.text.width={t.width} must be a multiple of config.text.heads={t.heads}."
      )
    text = TextTransformer(
      vocab_size=text_lib.VOCAB_SIZE,
      context_length=t.context_length,
      width=t.width,
      depth=t.depth,
      heads=t.heads,
      causal=t.causal,
      pooling=t.pooling,
      dtype=dtype,
    )
    return ImageTextModel(
      backbone=make_backbone(self.config.model, self.config.dtype),
      text=text,
      embed_dim=self.config[self.name].embed_dim,
      init_log_scale=self.init_log_scale,
      init_bias=self.init_bias,
      dtype=dtype,
    )

  def init_inputs(self, image_size, channels):
    tokens = self.tokenizer().encode_batch(["", "a"])
    return (jnp.zeros((2, image_size, image_size, channels), jnp.float32), jnp.asarray(tokens))

  def init_state(self, rng, variables):
    return {"tokenizer": jnp.asarray(self.tokenizer().to_array())}

  def pair_loss(self, image_emb, text_emb, params, axis_name):
    raise NotImplementedError

  def loss(self, params, batch_stats, method_state, batch, rng):
    if "tokens" not in batch:
      raise ValueError(
        f"{self.name} needs an image-text dataset (batches with 'tokens'); "
        f"config.dataset.name={self.config.dataset.name!r} has no captions. Use "
        f"one of image_text_pairs, openclipart_captions, tuxpaint_captions, "
        f"fashion_mnist_captions, coco_captions, or record shards converted from image-text "
        f"pairs (dataset.name='shards'; python -m sslax.data.shards --from jsonl|csv|webdataset)."
      )
    (images,) = batch["views"]
    tokens = text_lib.fit_context(batch["tokens"], self.config.text.context_length)
    (image_emb, text_emb), updates = self.network().apply(
      {"params": params, "batch_stats": batch_stats},
      images,
      tokens,
      train=True,
      mutable=["batch_stats"],
    )
    logit_params = {k: params[k] for k in ("log_scale", "logit_bias") if k in params}
    loss_fn = sharding.shard_over_batch(
      lambda x, y, p, axis_name: self.pair_loss(x, y, p, axis_name),
      self.mesh,
      num_args=2,
      num_replicated=1,
    )
    loss, metrics = loss_fn(image_emb, text_emb, logit_params)
    # The pretext task: pick each image's caption among the B of the global batch.
    metrics = dict(
      metrics,
      pretext_accuracy=metrics["image_to_text_acc"],
      pretext_chance=jnp.float32(1.0 / images.shape[0]),
    )
    return loss, (metrics, updates.get("batch_stats", batch_stats), method_state)


def restore_tokenizer(method_state) -> text_lib.ByteTokenizer:
  """The tokenizer saved in a checkpoint's method state (numpy or jax arrays)."""
  if not method_state or "tokenizer" not in method_state:
    raise ValueError(
      "this checkpoint has no tokenizer in its method state: it was not trained "
      "by an image-text method (clip, siglip)."
    )
  return text_lib.ByteTokenizer.from_array(np.asarray(method_state["tokenizer"]))
