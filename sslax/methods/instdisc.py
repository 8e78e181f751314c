"""InstDisc / NPID (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination"; reference zhirongw/lemniscate.pytorch: main.py, lib/NCEAverage.py,
lib/LinearAverage.py, lib/NCECriterion.py).

Every training image is its own class. The network is the backbone + one Linear to 128 dims,
L2-normalised (the reference's `fc` + `Normalize`). A memory bank in the method state holds
one unit feature per training example; the current feature of example i is classified among
all N by a non-parametric softmax over the bank at temperature 0.07, approximated by NCE with
m = 4096 noise rows drawn uniformly for every example (`loss="nce"`, the paper's ImageNet
recipe) or computed exactly over the whole bank (`loss="softmax"`, for small N). After the
loss, the batch's rows are updated with momentum 0.5: v_i <- normalize(0.5 v_i + 0.5 f_i).
The math is `sslax.losses.instdisc`.

Bank and indices: rows are looked up and written at each example's global index in the
training source, `batch["index"]`; a streamed TFDS source has none (index -1) and is refused
before the first step. The bank lives in the method state, so it is checkpointed with the
train state and a resumed run continues with it bit for bit; the NCE constant Z, set from
the first batch's scores as the reference does and then fixed, is there too (`nce_z`, <= 0
until set). The bank starts as the reference's: uniform in +-sqrt(3 / D), rows of about unit
norm; it has `bank_rows(N)` rows (N rounded up to 1024; the extra rows are never used).

Sharding: the train state's FSDP rule (`sslax.sharding.state_sharding`) places the bank: with
a mesh "fsdp" axis > 1 its rows are split over it (a bank of ImageNet's 1.28M x 128 floats
is 656 MB), otherwise every device holds it whole. The loss runs under `jax.shard_map` with
the bank in that placement (`bank_placement`): lookups score the group's queries against
the local rows and reduce-scatter, writes scatter the gathered global batch into the local
rows (see sslax/losses/instdisc.py), so 8 devices compute what 1 does.

Randomness: the noise rows are drawn from the step's rng for the whole global batch before
the batch is split, so they do not depend on the number of devices.

BatchNorm is global (cross-replica), unlike the reference's per-GPU statistics. That leaks
nothing here: the positive is a bank row written in an earlier step, like the negatives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import PartitionSpec as P

from sslax import sharding
from sslax.data import sources
from sslax.data.augment import ViewSpec
from sslax.losses import instdisc as instdisc_loss
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.models import BackboneWithHead, ProjectionHead, get_dtype, make_backbone

LOSSES = ("nce", "softmax")


def bank_placement(mesh, shape, fsdp_min_size: int):
  """(PartitionSpec, split axis or None) of a bank of `shape` in the train state.

  The train state is placed by the FSDP rule (`sharding.state_sharding`); a bank whose rule
  splits its rows over "fsdp" is used split, any other placement whole on every device.
  """
  spec = sharding.fsdp_spec(tuple(shape), mesh.shape.get("fsdp", 1), fsdp_min_size)
  if spec == P("fsdp", None):
    return spec, "fsdp"
  return P(), None


def example_indices(batch, method: str) -> jax.Array:
  """batch["index"] [B] int32, or an error that says why the method needs it."""
  if "index" not in batch:
    raise ValueError(
      f"{method} looks its memory bank up by example index, but the batch has no 'index' "
      "(the training pipeline, sslax.data.pipeline.train_dataset, puts one in every batch)."
    )
  return batch["index"]


def refuse_streamed_source(source, method: str, dataset: str) -> None:
  """A streamed TFDS source has no example indices (-1): a memory bank cannot be used."""
  if isinstance(source, sources.TFDSSource):
    raise ValueError(
      f"{method} keeps one memory-bank row per training example, looked up by example index, "
      f"but {dataset!r} is streamed from TFDS (every index is -1). Use a random-access "
      f"source: `tfds build {dataset} --file_format=array_record` (read in place), record "
      "shards (python -m sslax.data.shards), an image_folder, or a dataset that fits in memory."
    )


def sample_noise(rng, batch: int, num_noise: int, num_examples: int) -> jax.Array:
  """[batch, num_noise] int32 row ids, uniform over the N examples (with replacement, as the
  reference's AliasMethod over uniform unigrams), for the global batch."""
  return jax.random.randint(rng, (batch, num_noise), 0, num_examples, dtype=jnp.int32)


class InstDisc(Method):
  name = "instdisc"
  provides_probe_features = True

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        loss="nce",  # nce (the paper's, m noise rows) | softmax (exact, over the whole bank)
        num_negatives=instdisc_loss.PAPER_NEGATIVES,  # m of NCE (the reference's --nce-k)
        temperature=instdisc_loss.PAPER_TEMPERATURE,  # --nce-t
        bank_momentum=instdisc_loss.PAPER_MOMENTUM,  # --nce-m
        feature_dim=128,  # --low-dim
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg = config.instdisc
    if cfg.loss not in LOSSES:
      raise ValueError(f"config.instdisc.loss={cfg.loss!r}; choose one of {LOSSES}.")
    if cfg.num_negatives < 1 or cfg.feature_dim < 1 or not cfg.temperature > 0:
      raise ValueError(
        f"config.instdisc: num_negatives={cfg.num_negatives} and feature_dim="
        f"{cfg.feature_dim} must be >= 1 and temperature={cfg.temperature} > 0 (the paper: "
        f"4096, 128, 0.07)."
      )
    if not 0.0 <= cfg.bank_momentum < 1.0:
      raise ValueError(
        f"config.instdisc.bank_momentum={cfg.bank_momentum} must be in [0, 1) (the paper: 0.5)."
      )
    self.num_examples = run.num_train_examples
    self.bank_shape = (instdisc_loss.bank_rows(self.num_examples), cfg.feature_dim)

  def views(self):
    return (ViewSpec.from_config(self.config.augment, self.run.image_size),)

  def network(self):
    head = ProjectionHead(
      out_dim=self.config.instdisc.feature_dim,
      num_layers=1,  # the reference's fc: one Linear (with bias) after the pooled features
      use_bn=False,
      dtype=get_dtype(self.config.dtype),
    )
    return BackboneWithHead(backbone=make_backbone(self.config.model, self.config.dtype), head=head)

  def init_state(self, rng, variables):
    bank = instdisc_loss.init_bank(jax.random.fold_in(rng, 1), *self.bank_shape)
    return {"bank": bank, "nce_z": jnp.full((), -1.0, jnp.float32)}

  def loss(self, params, batch_stats, method_state, batch, rng):
    cfg = self.config.instdisc
    labels = example_indices(batch, self.name)
    (h, features), updates = self.network().apply(
      {"params": params, "batch_stats": batch_stats},
      batch["views"][0],
      train=True,
      mutable=["batch_stats"],
    )
    num_noise = cfg.num_negatives if cfg.loss == "nce" else 0
    noise = sample_noise(rng, labels.shape[0], num_noise, self.num_examples)
    bank_spec, bank_axis = bank_placement(
      self.mesh, self.bank_shape, self.config.model.fsdp_min_size
    )

    def local(x, y, noise, bank, nce_z):
      axes = sharding.BATCH_AXES
      value, metrics, nce_z = instdisc_loss.memory_bank_loss(
        x,
        y,
        noise,
        bank,
        nce_z,
        loss=cfg.loss,
        temperature=cfg.temperature,
        num_examples=self.num_examples,
        axis_name=axes,
        bank_axis=bank_axis,
      )
      bank = instdisc_loss.update_bank(
        bank, x, y, momentum=cfg.bank_momentum, axis_name=axes, bank_axis=bank_axis
      )
      return value, metrics, bank, nce_z

    batch_spec = P(sharding.BATCH_AXES)
    loss_fn = jax.shard_map(
      local,
      mesh=self.mesh,
      in_specs=(batch_spec, batch_spec, batch_spec, bank_spec, P()),
      out_specs=(P(), P(), bank_spec, P()),
    )
    value, metrics, bank, nce_z = loss_fn(
      features, labels, noise, method_state["bank"], method_state["nce_z"]
    )
    new_state = dict(method_state, bank=bank, nce_z=nce_z)
    return value, (dict(metrics, **{PROBE_FEATURES: h}), updates["batch_stats"], new_state)

  def before_epoch(self, state, epoch, ctx):
    refuse_streamed_source(ctx.train_source, self.name, self.config.dataset.name)
    return state
