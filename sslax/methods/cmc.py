"""CMC, Contrastive Multiview Coding (Tian, Krishnan & Isola 2019; reference HobbitLong/CMC:
train_CMC.py, models/resnet.py, NCE/NCEAverage.py, NCE/NCECriterion.py), with the L and ab
channels of CIE Lab as the two views.

Network: `LabViewsEncoder` takes RGB images [B, S, S, 3] in [0, 1], converts them to Lab
(`sslax.pretext.color.rgb_to_lab`) inside the network, and encodes each view with its own
backbone built from `config.model`: L (1 channel) by `l_encoder`, ab (2 channels) by
`ab_encoder`, normalised with the reference's Lab mean and std (L / 50 - 1; a and b to about
[-1, 1]). Each encoder's pooled features go through its own Linear to `feature_dim` (the
reference's `fc` + `l2norm`). The reference's ResNet CMC splits one network's width between
the two views (`resnet50v1`: two ResNet-50s of half width) or uses two whole ones
(`resnet50v2`, the paper's "ResNet-50" row): `config.model.width` is each encoder's.

Evaluation uses the concatenated pooled features of both encoders, [f_L, f_ab], as the
paper's linear probes do (LinearProbing.py: `torch.cat((feat_l, feat_ab), dim=1)`): that is
what `network().backbone` returns, so kNN, linear probes and fine-tuning see both views with
no special case. (`python -m sslax.export` exports single-backbone encoders only.)

Loss (`sslax.losses.cmc`): L -> ab plus ab -> L, either
* `negatives="batch"` (default): the other examples of the global batch, gathered from every
  device as SimCLR's, softmax cross entropy at temperature T; or
* `negatives="memory_bank"` (the reference): one bank per view in the method state, the L
  features scored against the ab bank and the ab features against the L bank with m noise
  rows per example, NCE with a constant Z per direction fixed on the first batch, momentum
  0.5 updates; the bank code, placement and index requirements are InstDisc's
  (sslax/methods/instdisc.py): a streamed TFDS source (no example indices) is refused.

Augmentation: one random resized crop and flip per image (`config.augment`'s crop and flip);
colour jitter, grayscale, blur and solarize are off whatever `config.augment` says (colour is
what the ab view carries), and inputs must not be mean/std normalised (the Lab conversion
needs RGB in [0, 1]). Grey datasets are refused: there is no ab view.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from sslax import sharding
from sslax.data.augment import ViewSpec
from sslax.losses import cmc as cmc_loss
from sslax.losses import instdisc as instdisc_loss
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.methods.instdisc import (
  bank_placement,
  example_indices,
  refuse_streamed_source,
  sample_noise,
)
from sslax.models import get_dtype, make_backbone
from sslax.pretext import color

NEGATIVES = ("batch", "memory_bank")
COLOUR_DATASET_HINT = (
  "--config.dataset.name=openclipart (configs/cmc_openclipart.py; "
  "get the data with `bash scripts/get_image_text_data.sh`)"
)
# The reference's Lab normalisation (train_CMC.py, view "Lab"): mean and std of L, a, b taken
# as the middle and half-width of their ranges.
LAB_MEAN = np.array([50.0, (-86.183 + 98.233) / 2, (-107.857 + 94.478) / 2], np.float32)
LAB_STD = np.array([50.0, (86.183 + 98.233) / 2, (107.857 + 94.478) / 2], np.float32)


class LabViewsEncoder(nn.Module):
  """RGB [B, S, S, 3] in [0, 1] -> [f_L, f_ab] [B, F_L + F_ab]: one encoder per Lab view."""

  l_encoder: nn.Module
  ab_encoder: nn.Module

  def encode_views(self, x, train: bool = True):
    """-> (f_L [B, F_L], f_ab [B, F_ab]), the two encoders' pooled features."""
    if x.shape[-1] != 3:
      raise ValueError(
        f"CMC's encoder needs RGB images [..., 3], got shape {x.shape}; it needs a colour "
        f"dataset, e.g. {COLOUR_DATASET_HINT}."
      )
    lab = (color.rgb_to_lab(x) - LAB_MEAN) / LAB_STD
    return self.l_encoder(lab[..., :1], train=train), self.ab_encoder(lab[..., 1:], train=train)

  def __call__(self, x, train: bool = True):
    return jnp.concatenate(self.encode_views(x, train=train), axis=-1)


class CMCNetwork(nn.Module):
  """images [B, S, S, 3] -> (features [f_L, f_ab], z_L [B, D], z_ab [B, D])."""

  backbone: LabViewsEncoder
  feature_dim: int
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    f_l, f_ab = self.backbone.encode_views(x, train=train)
    z_l = nn.Dense(self.feature_dim, dtype=self.dtype, name="head_l")(f_l)
    z_ab = nn.Dense(self.feature_dim, dtype=self.dtype, name="head_ab")(f_ab)
    features = jnp.concatenate([f_l, f_ab], axis=-1)
    return features, z_l.astype(jnp.float32), z_ab.astype(jnp.float32)


class CMC(Method):
  name = "cmc"
  provides_probe_features = True  # [f_L, f_ab], what evaluation sees

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        negatives="batch",  # batch (gathered over devices) | memory_bank (the reference's)
        temperature=instdisc_loss.PAPER_TEMPERATURE,  # --nce_t (ImageNet)
        feature_dim=128,  # --feat_dim
        num_negatives=instdisc_loss.PAPER_NEGATIVES,  # memory_bank: m noise rows, --nce_k
        bank_momentum=instdisc_loss.PAPER_MOMENTUM,  # memory_bank: --nce_m
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg = config.cmc
    if cfg.negatives not in NEGATIVES:
      raise ValueError(f"config.cmc.negatives={cfg.negatives!r}; choose one of {NEGATIVES}.")
    if cfg.num_negatives < 1 or cfg.feature_dim < 1 or not cfg.temperature > 0:
      raise ValueError(
        f"config.cmc: num_negatives={cfg.num_negatives} and feature_dim={cfg.feature_dim} "
        f"must be >= 1 and temperature={cfg.temperature} > 0 (the reference: 16384, 128, 0.07)."
      )
    if not 0.0 <= cfg.bank_momentum < 1.0:
      raise ValueError(f"config.cmc.bank_momentum={cfg.bank_momentum} must be in [0, 1).")
    if config.augment.normalize != "none":
      raise ValueError(
        f"CMC converts RGB in [0, 1] to Lab inside the network; config.augment.normalize="
        f"{config.augment.normalize!r} would feed it normalised values. Set it to 'none'."
      )
    self.num_examples = run.num_train_examples
    self.bank_shape = (instdisc_loss.bank_rows(self.num_examples), cfg.feature_dim)

  @property
  def uses_bank(self) -> bool:
    return self.config.cmc.negatives == "memory_bank"

  def views(self):
    spec = ViewSpec.from_config(
      self.config.augment,
      self.run.image_size,
      jitter_prob=0.0,
      grayscale_prob=0.0,
      blur_prob=0.0,
      solarize_prob=0.0,
    )
    return (spec,)

  def network(self):
    model, dtype = self.config.model, self.config.dtype
    backbone = LabViewsEncoder(
      l_encoder=make_backbone(model, dtype), ab_encoder=make_backbone(model, dtype)
    )
    return CMCNetwork(
      backbone=backbone, feature_dim=self.config.cmc.feature_dim, dtype=get_dtype(dtype)
    )

  def init_inputs(self, image_size, channels):
    if channels != 3:
      raise ValueError(
        f"CMC's L and ab views need a colour dataset: config.dataset.name="
        f"{self.config.dataset.name!r} has {channels} channel(s). Use {COLOUR_DATASET_HINT}."
      )
    return super().init_inputs(image_size, channels)

  def init_state(self, rng, variables):
    if not self.uses_bank:
      return {}
    return {
      "bank_l": instdisc_loss.init_bank(jax.random.fold_in(rng, 1), *self.bank_shape),
      "bank_ab": instdisc_loss.init_bank(jax.random.fold_in(rng, 2), *self.bank_shape),
      "nce_z_l": jnp.full((), -1.0, jnp.float32),
      "nce_z_ab": jnp.full((), -1.0, jnp.float32),
    }

  def loss(self, params, batch_stats, method_state, batch, rng):
    cfg = self.config.cmc
    (features, z_l, z_ab), updates = self.network().apply(
      {"params": params, "batch_stats": batch_stats},
      batch["views"][0],
      train=True,
      mutable=["batch_stats"],
    )
    if not self.uses_bank:
      loss_fn = sharding.shard_over_batch(
        lambda a, b, axis_name: cmc_loss.cross_view_batch_loss(
          a, b, cfg.temperature, axis_name=axis_name
        ),
        self.mesh,
        num_args=2,
      )
      value, metrics = loss_fn(z_l, z_ab)
      metrics = dict(metrics, **{PROBE_FEATURES: features})
      return value, (metrics, updates["batch_stats"], method_state)

    labels = example_indices(batch, self.name)
    noise = sample_noise(rng, labels.shape[0], cfg.num_negatives, self.num_examples)
    bank_spec, bank_axis = bank_placement(
      self.mesh, self.bank_shape, self.config.model.fsdp_min_size
    )

    def local(z_l, z_ab, y, noise, bank_l, bank_ab, nce_z_l, nce_z_ab):
      value, metrics, banks, zs = cmc_loss.cross_view_bank_loss(
        z_l,
        z_ab,
        y,
        noise,
        bank_l,
        bank_ab,
        nce_z_l,
        nce_z_ab,
        temperature=cfg.temperature,
        momentum=cfg.bank_momentum,
        num_examples=self.num_examples,
        axis_name=sharding.BATCH_AXES,
        bank_axis=bank_axis,
      )
      return value, metrics, *banks, *zs

    batch_spec = P(sharding.BATCH_AXES)
    loss_fn = jax.shard_map(
      local,
      mesh=self.mesh,
      in_specs=(batch_spec,) * 4 + (bank_spec, bank_spec, P(), P()),
      out_specs=(P(), P(), bank_spec, bank_spec, P(), P()),
    )
    value, metrics, bank_l, bank_ab, nce_z_l, nce_z_ab = loss_fn(
      z_l,
      z_ab,
      labels,
      noise,
      method_state["bank_l"],
      method_state["bank_ab"],
      method_state["nce_z_l"],
      method_state["nce_z_ab"],
    )
    new_state = dict(
      method_state, bank_l=bank_l, bank_ab=bank_ab, nce_z_l=nce_z_l, nce_z_ab=nce_z_ab
    )
    metrics = dict(metrics, **{PROBE_FEATURES: features})
    return value, (metrics, updates["batch_stats"], new_state)

  def before_epoch(self, state, epoch, ctx):
    if self.uses_bank:
      refuse_streamed_source(ctx.train_source, self.name, self.config.dataset.name)
    return state
