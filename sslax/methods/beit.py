"""BEiT (Bao et al. 2022) with BEiT v2's visual tokens (Peng et al. 2022): masked image modelling
that predicts, at each masked patch, the code a VQ-KD tokenizer gives that patch.

Reference: microsoft/unilm beit2/ (`modeling_pretrain.py` VisionTransformerForMaskedImageModeling,
`run_beitv2_pretraining.py`, `engine_for_pretraining.py`, `datasets.py`
DataAugmentationForBEiT, PRETRAINING.md) and beit/ (`masking_generator.py`).

Per step, for a batch of images (one view; the reference: ColorJitter(0.4, 0.4, 0.4), flip,
random resized crop (0.2, 1), set by the configs through config.augment):
  - masks: block-wise, `num_mask_patches` of the patch grid per image (75 of 14 x 14 = 38%),
    blocks of at least `min_mask_patches_per_block` patches (16) with aspect ratios in
    [0.3, 1/0.3] (`sslax.methods.masking.beit_masks`, drawn for the global batch in the step);
  - targets: the tokenizer's code of every patch of the unmasked image (no gradient);
  - the ViT (`network().backbone`, config.model, needs model.mask_token=True) sees the image
    with masked patches' embeddings replaced by its learned mask token (before positions are
    added, as the reference's forward_features); a linear head `lm_head` over the codebook
    (`codebook_size` classes) on the final-norm tokens of the masked patches predicts their
    codes; loss = cross-entropy averaged over the masked patches of the global batch
    (`losses.beit.masked_token_cross_entropy`), the reference's nn.CrossEntropyLoss on
    `x[bool_masked_pos]`. Metric mlm_acc: argmax accuracy on those patches.
The reference's recipe also sets LayerScale (--layer_scale_init_value 0.1 for ViT-B, 1e-5 for
ViT-L), a shared relative position bias without absolute position embeddings (--rel_pos_bias,
--abs_pos_emb False; config.model.rel_pos_bias="shared", posemb="none") and stochastic depth:
the configs set them on config.model.

The tokenizer: `beit.tokenizer_workdir`, a finished `vqkd` run (sslax/methods/vqkd.py), read
once, read-only, when the run initialises (never when the method is built; setup.build traces
the initial state, so resuming and evaluating a BEiT run read it again): its config.json is
checked (method vqkd, the same dataset.image_size and model.patch_size, so its token grid is
this ViT's patch grid; codebook_size and codebook_dim equal to its num_codes and code_dim; if
`tokenizer_config_sha256` is set, the same config hash), then its checkpoint (step
`tokenizer_step`, -1: the newest) gives the encoder, `quant_proj` and codebook, kept in
method_state["tokenizer"] so the BEiT checkpoints are self-contained. Images reach the
tokenizer in its own run's input normalisation. The tokenizer's identity is recorded in every
BEiT checkpoint as method_state["tokenizer_identity"] = {"step": int32 [], "config_sha256":
uint8 [32]} (`identity_of(method_state)` reads it back; the path is the run's config.json
`beit.tokenizer_workdir`), and `configs/beit_vit_fashion_mnist.py:DIR` also pins the step and
the hash in the run's config.json. `random_tokenizer=True` instead uses a randomly initialised
tokenizer (config.model's ViT without mask token or stochastic depth, a random unit codebook of
codebook_size x codebook_dim): for compile checks (`python -m sslax.aot`) and the
method-contract test, which have no tokenizer run; identity step -1, hash all zeros.

Not implemented: BEiT v2's patch aggregation ("cls_pt": --early_layers 9 --head_layers 2 of
`VisionTransformerForMaskedImageModelingCLS`: two extra blocks on the class token of the last
layer and the patch tokens of layer 9, predicting the same codes, loss added), which needs the
ViT's intermediate tokens; the recipe here is the reference's
`beit_base_patch16_224_8k_vocab` (BEiT v1's model) on BEiT v2's tokens.
Other deviations: the mask token, class token and blocks start as sslax's ViT does (mask token
zeros where the reference draws truncated normal 0.02; xavier-uniform blocks without the
reference's 1/sqrt(2 layer) rescale of the output projections); lm_head truncated normal std
0.02 as the reference; the loss averages over the masked patches of the global batch (the
reference: of each GPU's batch, the same when every image has its 75).

Evaluation (the paper's protocol): fine-tuning with layer-wise lr decay, `python -m
sslax.evaluate --protocol finetune` (configs set eval.finetune_*); the shared relative position
bias sits in the last layer-decay group, as the reference's `get_num_layer_for_vit`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax import lax

from sslax import sharding
from sslax.data.augment import ViewSpec
from sslax.losses import beit as beit_losses
from sslax.losses import vq
from sslax.methods import masking
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.methods.vqkd import (
  VQKDNetwork,
  check_same_shapes,
  config_sha256,
  frozen_copy,
  load_run_checkpoint,
  model_config_of,
  pooled,
  read_run_config,
  renormalize,
  tokenizer_codes,
)
from sslax.models import make_backbone

TOKENIZER_HINT = (
  "train one first: python -m sslax.main --config configs/vqkd_vit_fashion_mnist.py:TEACHER_DIR "
  "--workdir runs/vqkd_vit_fashion_mnist, then --config configs/beit_vit_fashion_mnist.py:"
  "runs/vqkd_vit_fashion_mnist"
)


class BEiTNetwork(nn.Module):
  """images [B, H, W, C] -> (code logits [B, U, K] of the patches `patch_ids` [B, U] (all N
  patches if None), the backbone's tokens [B, T, D]). masks [B, N] bool: patches the backbone
  replaces by its mask token."""

  backbone: nn.Module
  vocab_size: int

  @nn.compact
  def __call__(self, images, train: bool = True, masks=None, patch_ids=None):
    tokens = self.backbone(images, train=train, masks=masks, return_tokens=True)
    patches = tokens[:, self.backbone.num_prefix_tokens :]
    if patch_ids is not None:
      patches = jnp.take_along_axis(patches, patch_ids[:, :, None], axis=1)
    head = nn.Dense(
      self.vocab_size, kernel_init=nn.initializers.truncated_normal(0.02), name="lm_head"
    )
    return head(patches), tokens


def identity_of(method_state) -> dict:
  """The tokenizer a BEiT run trained on, from its method_state (a checkpoint's, e.g.
  `sslax.checkpoint.load_numpy(DIR)[0]["method_state"]`): {"step", "config_sha256" (hex)}."""
  ident = method_state["tokenizer_identity"]
  return {
    "step": int(np.asarray(ident["step"])),
    "config_sha256": bytes(np.asarray(ident["config_sha256"], np.uint8)).hex(),
  }


class BEiT(Method):
  name = "beit"
  # The probe sees the features of the masked image (the pass the loss makes), as MAE's.
  provides_probe_features = True

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        tokenizer_workdir="",  # a finished vqkd run
        tokenizer_step=-1,  # its checkpoint; -1: the newest
        tokenizer_config_sha256="",  # set: the tokenizer's config.json must hash to this
        random_tokenizer=False,  # a random tokenizer instead (compile checks only)
        # run_beitv2_pretraining.py: --codebook_size 8192 --codebook_dim 32 (the tokenizer's).
        codebook_size=8192,
        codebook_dim=32,
        # --num_mask_patches 75, --min_mask_patches_per_block 16, --max_mask_patches_per_block
        # None (0 here), masking_generator.py's aspect ratio 0.3 .. 1/0.3.
        num_mask_patches=75,
        min_mask_patches_per_block=16,
        max_mask_patches_per_block=0,  # 0: no cap
        mask_min_aspect=0.3,
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg, model = config.beit, config.model
    if model.name != "vit":
      raise ValueError(
        f"BEiT masks ViT patches; config.model.name={model.name!r}: set --config.model.name=vit."
      )
    if not model.get("mask_token", False):
      raise ValueError(
        "BEiT replaces masked patches by a learned mask token: set "
        "--config.model.mask_token=True (it is part of the saved model, so evaluation and "
        "export rebuild the same backbone)."
      )
    self.grid = run.image_size // model.patch_size
    self.num_patches = self.grid * self.grid
    if not 0 < cfg.num_mask_patches <= self.num_patches:
      raise ValueError(
        f"config.beit.num_mask_patches={cfg.num_mask_patches} must be in (0, "
        f"{self.num_patches}] for the {self.grid}x{self.grid} patch grid (the reference: 75 of "
        f"196, ~40%: {round(0.4 * self.num_patches)} here)."
      )
    if not 0 < cfg.min_mask_patches_per_block <= cfg.num_mask_patches:
      raise ValueError(
        f"config.beit.min_mask_patches_per_block={cfg.min_mask_patches_per_block} must be in "
        f"(0, num_mask_patches={cfg.num_mask_patches}] (the reference: 16 of 196 patches, "
        f"{max(1, round(16 * self.num_patches / 196))} for this grid)."
      )
    if cfg.max_mask_patches_per_block < 0:
      raise ValueError("config.beit.max_mask_patches_per_block must be >= 0 (0: no cap).")
    if cfg.codebook_size < 1 or cfg.codebook_dim < 1:
      raise ValueError("config.beit.codebook_size and codebook_dim must be >= 1.")
    if cfg.random_tokenizer and cfg.tokenizer_workdir:
      raise ValueError(
        "config.beit.random_tokenizer=True and tokenizer_workdir are both set: choose one."
      )
    # The tokenizer run is read when the run initialises (or the loss first needs it), never
    # when the method is built.
    self._tokenizer_info = None
    self._loaded = None

  def tokenizer_info(self) -> dict:
    """{"model": the tokenizer's config.model, "normalize": its input normalisation, "run":
    its config.json}, read (once) and checked against this run."""
    if self._tokenizer_info is not None:
      return self._tokenizer_info
    cfg = self.config.beit
    if cfg.random_tokenizer:
      info = {"model": frozen_copy(self.config.model), "normalize": self.config.augment.normalize}
      self._tokenizer_info = dict(info, run={})
      return self._tokenizer_info
    if not cfg.tokenizer_workdir:
      raise ValueError(
        "BEiT needs a VQ-KD tokenizer run: --config configs/beit_vit_fashion_mnist.py:"
        f"TOKENIZER_DIR (or --config.beit.tokenizer_workdir=DIR); {TOKENIZER_HINT}. Compile "
        "checks without one: --config.beit.random_tokenizer=True."
      )
    run_config = read_run_config(cfg.tokenizer_workdir, "beit.tokenizer_workdir", TOKENIZER_HINT)
    self._check_tokenizer(run_config)
    model = model_config_of(run_config, self.config.model)
    model.mask_token = False  # a VQ-KD encoder has none
    normalize = (run_config.get("augment") or {}).get("normalize", "none")
    self._tokenizer_info = {"model": model, "normalize": normalize, "run": run_config}
    return self._tokenizer_info

  def _check_tokenizer(self, tok: dict) -> None:
    cfg, where = self.config.beit, self.config.beit.tokenizer_workdir
    if tok.get("method") != "vqkd":
      raise ValueError(
        f"config.beit.tokenizer_workdir={where!r} is a {tok.get('method')!r} run, not a VQ-KD "
        f"tokenizer (method 'vqkd'); {TOKENIZER_HINT}."
      )
    theirs = tok.get("vqkd") or {}
    size = (tok.get("dataset") or {}).get("image_size")
    patch = (tok.get("model") or {}).get("patch_size")
    problems = []
    if size != self.run.image_size:
      problems.append(
        f"its dataset.image_size is {size}, this run's {self.run.image_size} (BEiT tokenizes "
        f"the image the ViT sees: set --config.dataset.image_size={size})"
      )
    if patch != self.config.model.patch_size:
      problems.append(
        f"its model.patch_size is {patch}, this ViT's {self.config.model.patch_size} (one code "
        f"per patch: set --config.model.patch_size={patch})"
      )
    for mine, key in (("codebook_size", "num_codes"), ("codebook_dim", "code_dim")):
      if theirs.get(key) != cfg[mine]:
        problems.append(
          f"its vqkd.{key} is {theirs.get(key)}, config.beit.{mine} {cfg[mine]} (set "
          f"--config.beit.{mine}={theirs.get(key)})"
        )
    if cfg.tokenizer_config_sha256 and cfg.tokenizer_config_sha256 != config_sha256(tok):
      problems.append(
        f"its config.json hashes to {config_sha256(tok)}, not the pinned "
        f"beit.tokenizer_config_sha256={cfg.tokenizer_config_sha256} (the run changed since "
        "this config was made: rebuild it with configs/beit_vit_fashion_mnist.py:DIR, or pin "
        "the new hash)"
      )
    if problems:
      raise ValueError(
        f"config.beit.tokenizer_workdir={where!r} does not fit this BEiT run: "
        + "; ".join(problems)
        + "."
      )

  # ---- networks

  def network(self):
    return BEiTNetwork(
      backbone=make_backbone(self.config.model, self.config.dtype),
      vocab_size=self.config.beit.codebook_size,
    )

  def tokenizer_network(self) -> VQKDNetwork:
    backbone = make_backbone(self.tokenizer_info()["model"], self.config.dtype)
    return VQKDNetwork(backbone=backbone, code_dim=self.config.beit.codebook_dim)

  def views(self):
    return (ViewSpec.from_config(self.config.augment, self.run.image_size),)

  # ---- state

  def tokenizer_state(self, rng) -> tuple[dict, dict]:
    """(method_state["tokenizer"] = {"params": {"backbone", "quant_proj"}, "codebook"},
    method_state["tokenizer_identity"])."""
    cfg = self.config.beit
    net = self.tokenizer_network()
    inputs = jnp.zeros((2, self.run.image_size, self.run.image_size, self.run.channels))
    if cfg.random_tokenizer:
      params = net.init(jax.random.fold_in(rng, 1), inputs, train=False)["params"]
      codebook = vq.l2_normalize(
        jax.random.normal(jax.random.fold_in(rng, 2), (cfg.codebook_size, cfg.codebook_dim))
      )
      identity = {"step": jnp.int32(-1), "config_sha256": jnp.zeros((32,), jnp.uint8)}
      return {"params": params, "codebook": codebook}, identity
    if self._loaded is None:
      where = cfg.tokenizer_workdir
      tree, step = load_run_checkpoint(where, cfg.tokenizer_step, "beit.tokenizer_workdir")
      params = tree.get("params") or {}
      codebook = (tree.get("method_state") or {}).get("codebook")
      if "backbone" not in params or "quant_proj" not in params or codebook is None:
        raise ValueError(
          f"config.beit.tokenizer_workdir={where!r}: step {step} has no VQ-KD encoder "
          "(params backbone + quant_proj) or codebook (method_state); " + TOKENIZER_HINT + "."
        )
      sha = config_sha256(self.tokenizer_info()["run"])
      self._loaded = {
        "params": {"backbone": params["backbone"], "quant_proj": params["quant_proj"]},
        "codebook": np.asarray(codebook, np.float32),
        "step": step,
        "config_sha256": sha,
      }
      logging.info("BEiT tokenizer: %s step %d, config sha256 %s", where, step, sha)
    loaded = self._loaded
    expected = jax.eval_shape(lambda: net.init(jax.random.key(0), inputs, train=False))
    check_same_shapes(
      expected["params"], loaded["params"], f"beit tokenizer {cfg.tokenizer_workdir}"
    )
    if loaded["codebook"].shape != (cfg.codebook_size, cfg.codebook_dim):
      raise ValueError(
        f"beit tokenizer {cfg.tokenizer_workdir}: its codebook is {loaded['codebook'].shape}, "
        f"config.beit.codebook_size x codebook_dim is {cfg.codebook_size} x {cfg.codebook_dim}."
      )
    identity = {
      "step": jnp.int32(loaded["step"]),
      "config_sha256": jnp.asarray(np.frombuffer(bytes.fromhex(loaded["config_sha256"]), np.uint8)),
    }
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), loaded["params"])
    return {"params": params, "codebook": jnp.asarray(loaded["codebook"])}, identity

  def init_state(self, rng, variables):
    tokenizer, identity = self.tokenizer_state(rng)
    return {"tokenizer": tokenizer, "tokenizer_identity": identity}

  # ---- the step

  def sample_masks(self, rng, batch: int):
    """[batch, N] bool block-wise masks for the global batch (`masking.beit_masks`)."""
    cfg = self.config.beit
    masks = masking.beit_masks(
      rng,
      batch,
      self.grid,
      self.grid,
      cfg.num_mask_patches,
      min_num_patches=cfg.min_mask_patches_per_block,
      max_num_patches=cfg.max_mask_patches_per_block or None,
      min_aspect=cfg.mask_min_aspect,
    )
    return lax.with_sharding_constraint(masks, sharding.batch_sharding(self.mesh))

  def targets(self, tokenizer_state, images):
    """The tokenizer's codes [B, N] of images in this run's normalisation (no gradient)."""
    x = renormalize(images, self.config.augment.normalize, self.tokenizer_info()["normalize"])
    codes = tokenizer_codes(
      self.tokenizer_network(), tokenizer_state["params"], tokenizer_state["codebook"], x
    )
    return lax.stop_gradient(codes)

  def loss(self, params, batch_stats, method_state, batch, rng):
    cfg = self.config.beit
    (images,) = batch["views"]
    mask_rng, drop_rng = jax.random.split(rng)
    masks = self.sample_masks(mask_rng, images.shape[0])
    patch_ids, valid = beit_losses.masked_patch_ids(masks, cfg.num_mask_patches)
    codes = self.targets(method_state["tokenizer"], images)
    targets = jnp.take_along_axis(codes, patch_ids, axis=1)  # [B, U]
    logits, tokens = self.network().apply(
      {"params": params},
      images,
      train=True,
      masks=masks,
      patch_ids=patch_ids,
      rngs={"dropout": drop_rng},
    )
    loss, accuracy = beit_losses.masked_token_cross_entropy(logits, targets, valid)
    metrics = {
      "mlm_acc": accuracy,
      "masked_ratio": jnp.mean(masks.astype(jnp.float32)),
      PROBE_FEATURES: pooled(tokens, self.network().backbone),
    }
    return loss, (metrics, batch_stats, method_state)
