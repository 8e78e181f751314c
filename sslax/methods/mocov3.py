"""MoCo v3 (Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised Vision
Transformers").

Query encoder (trained): backbone -> projector -> predictor, both the reference's `_build_mlp`
(moco/builder.py): every Linear bias-free, Linear-BN-ReLU on the hidden layers, 4096 -> 256 at
ImageNet scale. The heads and the temperature depend on the backbone, as in the reference
(`mocov3.heads`, "auto" picks by `config.model.name`):

  ResNet (`MoCo_ResNet`): projector 2 layers ending in an affine-free BN; predictor 2 layers
    ending in the bare Linear (no BN); tau 1.0 (`--moco-t` default, every ResNet recipe of
    CONFIG.md).
  ViT (`MoCo_ViT`): projector 3 layers, predictor 2 layers, both ending in an affine-free BN;
    tau 0.2 (`--moco-t=.2` in every ViT recipe).

Momentum encoder: backbone + projector whose params are an EMA of the query encoder's
(momentum from `momentum` to 1 with a cosine schedule over the run, as the reference's
`adjust_moco_momentum`, per iteration), held in `method_state["teacher"]`
(`sslax.methods.teacher`); it never gets a gradient (not a trained param, and its keys pass a
stop-gradient). Its BatchNorm running statistics come from its own training-mode passes, like
BYOL's target.

Loss (`losses.mocov3`): ctr(q1, k2) + ctr(q2, k1), each 2 tau x the cross entropy over [b, B]
logits whose negatives are all keys of the GLOBAL batch (gathered across devices) and whose
positive is the key at the query's own global index. No queue, so the global (cross-replica)
BatchNorm of our jit is what MoCo v3 uses (SyncBN) and leaks nothing.

Frozen patch projection (`freeze_patch_embed`, MoCo v3 sec. 4.1, the stability trick for
ViTs): the backbone's `patch_embed` submodule gets no update at all (no gradient step, no
weight decay, no optimizer state) and stays at its random init; `wrap_optimizer` routes it to
optax.set_to_zero. The gradient clip of `optimizer.grad_clip_norm` then sees only the trained
params, as PyTorch's requires_grad=False does.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from sslax import optim, sharding
from sslax.losses.mocov3 import mocov3_loss
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.methods.siamese import SiameseNetwork, embedding_std, forward_views, two_views
from sslax.methods.teacher import EMATeacher
from sslax.models import ProjectionHead, get_dtype, make_backbone

# The parts of the query encoder that the momentum encoder copies (no predictor twin).
MOMENTUM_MODULES = ("backbone", "projector")
PATCH_EMBED = "patch_embed"
HEADS = ("auto", "resnet", "vit")
# The reference's softmax temperature per backbone (main_moco.py default / CONFIG.md ViT runs).
TEMPERATURE = {"resnet": 1.0, "vit": 0.2}


class MoCoV3(Method):
  name = "mocov3"
  provides_probe_features = True
  teacher = EMATeacher(MOMENTUM_MODULES)  # the momentum encoder

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        # None: the reference's for the backbone, 1.0 (ResNet) or 0.2 (ViT).
        temperature=ml_collections.config_dict.placeholder(float),
        momentum=0.99,  # m at step 0, cosine to 1 (ViT and ResNet-50; 1000-epoch ResNet: 0.996)
        proj_hidden_dim=4096,
        proj_dim=256,
        pred_hidden_dim=4096,
        heads="auto",  # "resnet" (MoCo_ResNet), "vit" (MoCo_ViT); "auto": by config.model.name
        freeze_patch_embed=False,  # ViTs: True keeps the random patch projection fixed
        view_blur_prob=(1.0, 0.1),
        view_solarize_prob=(0.0, 0.2),
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg = config.mocov3
    if cfg.heads not in HEADS:
      raise ValueError(f"config.mocov3.heads={cfg.heads!r}: choose one of {HEADS}.")
    if cfg.temperature is not None and cfg.temperature <= 0:
      raise ValueError(
        f"config.mocov3.temperature={cfg.temperature} must be > 0 (MoCo v3: 1.0 for a ResNet, "
        f"0.2 for a ViT; unset picks by the backbone)."
      )
    if not 0.0 <= cfg.momentum <= 1.0:
      raise ValueError(f"config.mocov3.momentum={cfg.momentum} must be in [0, 1] (MoCo v3: 0.99).")

  @property
  def backbone_kind(self) -> str:
    """'resnet' or 'vit': whose heads (and default temperature) the reference uses here."""
    heads = self.config.mocov3.heads
    if heads != "auto":
      return heads
    return "vit" if self.config.model.name == "vit" else "resnet"

  @property
  def temperature(self) -> float:
    t = self.config.mocov3.temperature
    return TEMPERATURE[self.backbone_kind] if t is None else float(t)

  def views(self):
    cfg = self.config.mocov3
    return two_views(self.config, cfg.view_blur_prob, cfg.view_solarize_prob)

  def network(self):
    cfg, dtype = self.config.mocov3, get_dtype(self.config.dtype)
    vit = self.backbone_kind == "vit"
    # The reference's _build_mlp(num_layers, ..., last_bn): every Linear bias-free, hidden
    # BN (affine) + ReLU, and with last_bn an affine-free BN after the last Linear.
    mlp = lambda layers, hidden, last_bn: ProjectionHead(
      hidden_dim=hidden,
      out_dim=cfg.proj_dim,
      num_layers=layers,
      last_bn=last_bn,
      out_bias=False,
      dtype=dtype,
    )
    projector = mlp(3 if vit else 2, cfg.proj_hidden_dim, True)
    predictor = mlp(2, cfg.pred_hidden_dim, vit)
    return SiameseNetwork(
      backbone=make_backbone(self.config.model, self.config.dtype),
      projector=projector,
      predictor=predictor,
    )

  def wrap_optimizer(self, tx):
    if not self.config.mocov3.freeze_patch_embed:
      return tx

    def labels(params):
      backbone = params.get("backbone", {})
      if PATCH_EMBED not in backbone:
        raise ValueError(
          f"config.mocov3.freeze_patch_embed=True, but the backbone "
          f"(config.model.name={self.config.model.name!r}) has no '{PATCH_EMBED}' submodule "
          f"(it has {sorted(backbone)}); use a ViT or set "
          f"--config.mocov3.freeze_patch_embed=False."
        )
      is_patch_embed = lambda path: (
        len(path) > 1 and path[0].key == "backbone" and path[1].key == PATCH_EMBED
      )
      return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if is_patch_embed(path) else "trained", params
      )

    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)

  def init_state(self, rng, variables):
    # The momentum encoder starts as a copy of the query encoder's backbone + projector.
    return {"teacher": self.teacher.init(variables)}

  def momentum(self, step):
    """m_k = 1 - (1 - m_0) (cos(pi k / K) + 1) / 2 for the update after k steps; 1 at k = K."""
    return optim.cosine_increase(self.config.mocov3.momentum, 1.0, self.run.total_steps)(step)

  def loss(self, params, batch_stats, method_state, batch, rng):
    net = self.network()
    ((h1, z1, q1), (_, _, q2)), batch_stats = forward_views(
      net, params, batch_stats, batch["views"]
    )
    momentum_encoder = self.teacher.variables(method_state["teacher"])
    (k1, k2), key_batch_stats = forward_views(
      net,
      momentum_encoder["params"],
      momentum_encoder["batch_stats"],
      batch["views"],
      method="project",
    )
    loss_fn = sharding.shard_over_batch(
      lambda a, b, c, d, axis_name: mocov3_loss(a, b, c, d, self.temperature, axis_name=axis_name),
      self.mesh,
      num_args=4,
    )
    loss, metrics = loss_fn(q1, q2, k1, k2)
    metrics = dict(metrics, embedding_std=embedding_std(z1), **{PROBE_FEATURES: h1})
    new_state = {"teacher": self.teacher.with_batch_stats(method_state["teacher"], key_batch_stats)}
    return loss, (metrics, batch_stats, new_state)

  def after_update(self, method_state, params, step):
    """momentum encoder <- m k + (1 - m) query encoder, m = momentum(step); step = steps taken.

    The reference updates the momentum encoder at the start of iteration i (0-based), with the
    query params after i optimizer steps and m(i); ours runs right after step i's update, when
    i = `step` steps have been taken, with the same params and m(step) (its i = 0 update, of
    an encoder equal to its copy, is a no-op we skip).
    """
    return {"teacher": self.teacher.update(method_state["teacher"], params, self.momentum(step))}
