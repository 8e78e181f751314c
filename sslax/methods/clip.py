"""CLIP (Radford et al. 2021): contrastive image-text pretraining with a learned temperature.

The logit scale is exp(t') with t' a parameter (init ln(1 / 0.07)). As in open_clip
(`open_clip_train/train.py`: `logit_scale.clamp_(0, math.log(100))` after `optimizer.step()`),
t' itself is clamped to [0, ln max_logit_scale] after every optimizer step
(`constrain_params`); the loss uses exp(t') with its full gradient.
"""

from __future__ import annotations

import math

from sslax.losses.clip import clamp_log_scale, clip_loss
from sslax.methods.image_text import ImageTextMethod


class CLIP(ImageTextMethod):
  name = "clip"
  init_log_scale = math.log(1 / 0.07)  # CLIP sec. 2.5: temperature initialised to 0.07

  @classmethod
  def default_config(cls):
    c = super().default_config()
    # t' is clamped to [0, ln max_logit_scale] after each step (CLIP sec. 2.5; open_clip).
    c.max_logit_scale = 100.0
    return c

  def pair_loss(self, image_emb, text_emb, params, axis_name):
    cfg = self.config.clip
    return clip_loss(
      image_emb,
      text_emb,
      params["log_scale"],
      axis_name=axis_name,
      chunked=cfg.chunked_loss,
    )

  def constrain_params(self, params, step):
    log_scale = clamp_log_scale(params["log_scale"], self.config.clip.max_logit_scale)
    return {**params, "log_scale": log_scale}
