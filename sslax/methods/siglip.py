"""SigLIP (Zhai et al. 2023): image-text pretraining with a pairwise sigmoid loss."""

from __future__ import annotations

from sslax.losses.siglip import INIT_BIAS, INIT_LOG_SCALE, siglip_loss
from sslax.methods.image_text import ImageTextMethod


class SigLIP(ImageTextMethod):
  name = "siglip"
  init_log_scale = INIT_LOG_SCALE  # t' = log 10
  init_bias = INIT_BIAS  # b = -10: starts near the many negatives' prior

  def pair_loss(self, image_emb, text_emb, params, axis_name):
    return siglip_loss(
      image_emb,
      text_emb,
      params["log_scale"],
      params["logit_bias"],
      axis_name=axis_name,
      chunked=self.config.siglip.chunked_loss,
    )
