"""CLIP (Radford et al. 2021): contrastive image-text pretraining with a learned temperature."""

from __future__ import annotations

import math

from sslax.losses.clip import clip_loss
from sslax.methods.image_text import ImageTextMethod


class CLIP(ImageTextMethod):
  name = "clip"
  init_log_scale = math.log(1 / 0.07)  # CLIP sec. 2.5: temperature initialised to 0.07

  @classmethod
  def default_config(cls):
    c = super().default_config()
    c.max_logit_scale = 100.0  # the learned scale is clipped here (CLIP sec. 2.5)
    return c

  def pair_loss(self, image_emb, text_emb, params, axis_name):
    cfg = self.config.clip
    return clip_loss(
      image_emb,
      text_emb,
      params["log_scale"],
      axis_name=axis_name,
      chunked=cfg.chunked_loss,
      max_scale=cfg.max_logit_scale,
    )
