"""VQ-KD (Peng et al. 2022, BEiT v2): a visual tokenizer trained by vector-quantised knowledge
distillation from the patch features of a teacher, here the backbone of another sslax run.

Reference: microsoft/unilm beit2/ (`modeling_vqkd.py` VQKD, `norm_ema_quantizer.py`
NormEMAVectorQuantizer, `run_vqkd_training.py`, `engine_for_vqkd.py`, TOKENIZER.md).

Per step, for a batch of images (one view: random resized crop + flip, no colour jitter, as
`build_vqkd_dataset` with the default --color_jitter 0):
  - teacher: the frozen ViT backbone of `vqkd.teacher_workdir`'s checkpoint, eval mode, gives
    the target features of every patch (its final-norm patch tokens; the reference: CLIP
    ViT-B/16's patch tokens through its projection, or DINO ViT-B/16's);
  - encoder (`network().backbone`, config.model's ViT) -> final-norm patch tokens ->
    `quant_proj` (Linear, tanh, Linear to `code_dim`: the reference's encode_task_layer) ->
    l2-normalise -> nearest of `num_codes` l2-normalised codes (`losses.vq.quantize`);
  - decoder: a ViT with patch size 1 on the [h, w, code_dim] grid of quantised codes
    (straight-through gradient to the encoder) -> `decode_proj` (Linear, tanh, Linear to the
    teacher's width) -> per-patch prediction of the teacher's features;
  - loss = commitment beta * mean((sg(z_q) - z)^2) (beta 1.0) + mean over patches of
    1 - cos(prediction, teacher feature) (rec_loss_type "cosine");
  - codebook (method_state, never differentiated), updated inside the step from the GLOBAL
    batch's assignment counts and feature sums (`losses.vq.codebook_statistics`, the
    reference's all_reduce): e <- l2norm(decay e + (1 - decay) l2norm(mean of its features)),
    unused codes unchanged, decay 0.99 (`ema_codebook_update`);
  - codebook initialisation: 10 rounds of spherical k-means on the first batch's (global)
    features (`kmeans_init`, the reference's --quantize_kmeans_init, on in TOKENIZER.md), or
    random unit vectors.
Metrics: rec_loss, quant_loss, codebook_usage (fraction of codes the global batch uses),
codebook_perplexity (exp of the entropy of the batch's code histogram; num_codes = uniform),
codes_restarted, and rec_loss_constant_code: the batch's rec_loss floor for a tokenizer that
gives every patch the same code (`losses.vq.constant_code_rec_loss`), which rec_loss must beat.

Dead codes: the reference has no restart (unused codes keep their place; its k-means
initialisation is what spreads the codes). `dead_code_threshold` > 0 adds one
(`losses.vq.restart_dead_codes`, as Jukebox's): an EMA of each code's assignments per batch
(decay as the codebook's, started at the threshold) below the threshold moves the code to a
random (normalised) encoder output of the current global batch and resets its EMA to the
threshold; so a code the first batches do not use moves at once, a used one after its EMA has
decayed below the threshold (~100 ln(usage / threshold) steps at decay 0.99). 0 (the default)
is the reference. `restart_sampling="error"` draws the new positions as k-means++ seeds them
(a patch with probability proportional to its squared distance to its code) instead of
uniformly: where the encoder's outputs crowd onto a few codes, a uniform draw lands next to an
existing code and dies again. Measured on Fashion-MNIST (512 codes, 300 steps, one seed each;
benchmarks/results/tokenizer_usage.json): test-split usage 33.4% -> 36.5% at lr 3e-4 and
56.4% -> 67.2% at lr 1e-4, uniform -> error.

Other deviations from the reference: the teacher is any sslax ViT run (DINO, DINOv2, MoCo v3
...), not CLIP; its patch grid at dataset.image_size must be the tokenizer's (the reference:
224 px for both, 16 px patches); images reach each network in its own run's input
normalisation (`augment.normalize`, converted in the step), where the reference feeds the
tokenizer [-1, 1] pixels ("default" process type), which sslax's normalisations do not include;
the codebook's usage EMA starts at dead_code_threshold (0: the reference's zeros) and is not
reset every epoch (the reference's `cluster_size` only feeds its unused-code count); flax's truncated normal (+-2 std, std 0.02)
for the task layers' weights; the ViTs are sslax's (xavier-uniform init, no 1/sqrt(2 layer)
rescale of the output projections).

The teacher run is read, read-only, when the run initialises, never when the method is built
(setup.build_method): its config.json (a ViT whose patch grid at dataset.image_size is the
tokenizer's; its width = `decoder_out_dim`, or 0 to take it from there) and its checkpoint
(`teacher_step`, through `sslax.checkpoint`: numpy, no pickle). The weights are kept in
method_state["teacher"], so the checkpoints are self-contained; rebuilding the run (resume,
evaluation: setup.build traces the initial state) still reads the teacher run, which must
stay where it was. `teacher_weights`: "auto" takes DINO's EMA teacher (as `linear_eval`), else
the trained network. `random_teacher=True` replaces the teacher by a randomly initialised copy
of config.model's ViT: for compile checks (`python -m sslax.aot`) and the method-contract
test, which have no teacher run; its features are a random-feature distillation target, not a
recipe.

BEiT (sslax/methods/beit.py) loads this run's encoder, `quant_proj` and codebook as its
tokenizer (`tokenizer_codes`).
"""

from __future__ import annotations

import hashlib
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from jax import lax

from sslax import checkpoint
from sslax.data.augment import NORMALIZATIONS, ViewSpec
from sslax.losses import vq
from sslax.methods.base import PROBE_FEATURES, Method
from sslax.methods.linear_eval import TEACHER_EVALUATED
from sslax.models import ViT, get_dtype, make_backbone, vit_dims

TEACHER_WEIGHTS = ("auto", "student", "teacher")
RESTART_SAMPLING = ("uniform", "error")  # config.vqkd.restart_sampling
TEACHER_HINT = (
  "train one first, e.g. python -m sslax.main --config configs/dino_vit_fashion_mnist.py "
  "--workdir runs/dino_vit_fashion_mnist, then --config configs/vqkd_vit_fashion_mnist.py:"
  "runs/dino_vit_fashion_mnist"
)
# config.json keys that describe the file, not the run (sslax/workdir.py writes them): left out
# of a run's config hash.
_NOT_HASHED = ("sslax_version",)


# ---------------------------------------------------------------------------------------------
# Another run, read-only: its config.json, identity and checkpoint (the teacher of VQ-KD, the
# tokenizer of BEiT).


def read_run_config(workdir: str, key: str, hint: str) -> dict:
  """DIR/config.json (a local path or gs://...) as a dict; a missing run fails naming the
  config key and `hint`."""
  path = epath.Path(workdir or ".") / "config.json"
  if not workdir or not path.is_file():
    raise FileNotFoundError(
      f"config.{key}={workdir!r}: {path if workdir else 'config.json'} does not exist; it must "
      f"be the workdir of a finished sslax run ({hint})."
    )
  return json.loads(path.read_text())


def config_sha256(run_config: dict) -> str:
  """sha256 (hex) of a run's config.json contents (sorted keys, its `sslax_version` left out):
  the same config gives the same hash whichever sslax version wrote it."""
  kept = {k: v for k, v in run_config.items() if k not in _NOT_HASHED}
  return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of DIR's complete checkpoints, oldest first (read without creating anything:
  orbax names a step's directory by its number once the step is written whole)."""
  directory = epath.Path(workdir) / "checkpoints"
  if not directory.is_dir():
    return []
  return sorted(int(d.name) for d in directory.iterdir() if d.name.isdigit())


def run_identity(workdir: str, step: int = -1, key: str = "workdir") -> dict:
  """{"workdir", "step" (-1: the newest checkpoint's), "config_sha256"} of a finished run."""
  run_config = read_run_config(workdir, key, "train it first")
  return {
    "workdir": workdir,
    "step": _resolve_step(workdir, step, key),
    "config_sha256": config_sha256(run_config),
  }


def _resolve_step(workdir: str, step: int, key: str) -> int:
  steps = checkpoint_steps(workdir)
  if not steps:
    raise FileNotFoundError(
      f"config.{key}={workdir!r} has no checkpoint in {epath.Path(workdir) / 'checkpoints'}: "
      "train that run (or let it reach its first checkpoint) first."
    )
  if step < 0:
    return steps[-1]
  if step not in steps:
    raise FileNotFoundError(
      f"config.{key}={workdir!r} has no checkpoint of step {step}; it has {steps}: choose one "
      "of them (or -1: the newest)."
    )
  return step


def load_run_checkpoint(workdir: str, step: int, key: str) -> tuple[dict, int]:
  """(the checkpoint's tree of numpy arrays, its step); -1: the newest. Read-only."""
  step = _resolve_step(workdir, step, key)
  tree, step = checkpoint.load_numpy(workdir, step)
  return tree, int(step)


def model_config_of(run_config: dict, like: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The other run's config.model as a ConfigDict (keys it lacks: `like`'s values, i.e. this
  sslax version's defaults), without stochastic depth: it only runs frozen here."""
  theirs = run_config.get("model") or {}
  merged = {k: theirs.get(k, v) for k, v in like.to_dict().items()}
  merged = {k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()}
  merged["drop_path_rate"] = 0.0
  return ml_collections.ConfigDict(merged)


def frozen_copy(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.model for a frozen copy (random teacher / tokenizer): no stochastic depth, no
  mask token."""
  model = ml_collections.ConfigDict(model.to_dict())
  model.drop_path_rate = 0.0
  model.mask_token = False
  return model


def check_same_shapes(expected, loaded, what: str) -> None:
  """Fails naming the first differences when `loaded`'s leaves differ from `expected`'s."""
  shape = lambda tree: {
    jax.tree_util.keystr(p): tuple(np.shape(v))
    for p, v in jax.tree_util.tree_leaves_with_path(tree)
  }
  a, b = shape(expected), shape(loaded)
  if a != b:
    diff = sorted(set(a.items()) ^ set(b.items()))[:4]
    raise ValueError(
      f"{what}: the checkpoint's parameters do not match the network rebuilt from its "
      f"config.json (first differences: {diff}); was it written by another sslax version?"
    )


def renormalize(images, source: str, target: str):
  """Images normalised with NORMALIZATIONS[source] -> the same pixels under [target]."""
  if source == target:
    return images
  x = images
  for name, inverse in ((source, True), (target, False)):
    stats = NORMALIZATIONS[name]
    if stats is None:
      continue
    mean, std = (jnp.asarray(s, images.dtype) for s in stats)
    if images.shape[-1] != mean.shape[0]:
      raise ValueError(
        f"normalisation {name!r} has {mean.shape[0]} channels; the images have "
        f"{images.shape[-1]}: the runs must share augment.normalize for grey images."
      )
    x = x * std + mean if inverse else (x - mean) / std
  return x


def pooled(tokens, backbone: ViT):
  """A ViT's features [B, D] from its return_tokens output, pooled as the backbone pools."""
  if backbone.pool == "cls":
    return tokens[:, 0]
  return jnp.mean(tokens[:, backbone.num_prefix_tokens :], axis=1)


# ---------------------------------------------------------------------------------------------
# Networks


class TaskHead(nn.Module):
  """Linear -> tanh -> Linear, [..., D] -> [..., out]: VQ-KD's encode / decode task layers
  (weights truncated normal std 0.02, biases zero), in float32."""

  hidden: int
  out: int

  @nn.compact
  def __call__(self, x):
    dense = lambda features, name: nn.Dense(
      features, kernel_init=nn.initializers.truncated_normal(0.02), name=name
    )
    return dense(self.out, "fc2")(jnp.tanh(dense(self.hidden, "fc1")(x.astype(jnp.float32))))


class VQKDNetwork(nn.Module):
  """The tokenizer: `backbone` (encoder ViT) + `quant_proj` -> codes; `decoder` (ViT, patch
  size 1, on the code grid) + `decode_proj` -> teacher features. decoder None: the encoder
  half only (BEiT's tokenizer)."""

  backbone: nn.Module
  code_dim: int
  decoder: nn.Module | None = None
  out_dim: int = 0

  def setup(self):
    self.quant_proj = TaskHead(self.backbone.width, self.code_dim)
    if self.decoder is not None:
      self.decode_proj = TaskHead(self.decoder.width, self.out_dim)

  def encode(self, images, train: bool = True):
    """images [B, H, W, C] -> (z [B, N, code_dim] float32 before the l2-normalisation,
    the encoder's features [B, D] pooled as the backbone pools)."""
    tokens = self.backbone(images, train=train, return_tokens=True)
    z = self.quant_proj(tokens[:, self.backbone.num_prefix_tokens :])
    return z, pooled(tokens, self.backbone)

  def decode(self, codes, train: bool = True):
    """codes [B, h, w, code_dim] -> predicted teacher features [B, h * w, out_dim]."""
    tokens = self.decoder(codes, train=train, return_tokens=True)
    return self.decode_proj(tokens[:, self.decoder.num_prefix_tokens :])

  def __call__(self, images, train: bool = True):
    z, _ = self.encode(images, train=train)
    if self.decoder is None:
      return z
    b, h, w, _ = images.shape
    p = self.backbone.patch_size
    return self.decode(vq.l2_normalize(z).reshape(b, h // p, w // p, -1), train=train)


def tokenizer_codes(network: VQKDNetwork, params, codebook, images):
  """The visual tokens of images [B, H, W, C] (in the tokenizer's input normalisation):
  [B, N] int32, the nearest code of each patch (the reference's `get_codebook_indices`).
  params: {"backbone", "quant_proj"} of a VQ-KD run; codebook [K, d] its method_state's."""
  z, _ = network.apply({"params": params}, images, train=False, method=VQKDNetwork.encode)
  return vq.nearest_code(vq.l2_normalize(z), codebook)


# ---------------------------------------------------------------------------------------------
# The method


class VQKD(Method):
  name = "vqkd"
  provides_probe_features = True  # the encoder's pooled features of the step's view

  @classmethod
  def default_config(cls):
    return ml_collections.ConfigDict(
      dict(
        # The teacher: an sslax run with a ViT backbone (DINO, DINOv2, MoCo v3 ...).
        teacher_workdir="",
        teacher_step=-1,  # its checkpoint; -1: the newest
        teacher_weights="auto",  # auto | student | teacher (an EMA teacher in method_state)
        random_teacher=False,  # a random copy of config.model instead (compile checks only)
        # The reference's defaults (run_vqkd_training.py, TOKENIZER.md).
        num_codes=8192,  # --codebook_n_emd
        code_dim=32,  # --codebook_emd_dim
        decay=0.99,  # --ema_decay
        beta=1.0,  # commitment weight (modeling_vqkd.py: NormEMAVectorQuantizer(beta=1.0))
        kmeans_init=True,  # --quantize_kmeans_init
        kmeans_iters=10,
        dead_code_threshold=0.0,  # > 0: restart codes used less per batch (not the reference)
        # Where a dead code restarts: "uniform" (a random patch of the batch, as Jukebox) or
        # "error" (a patch drawn with probability ~ its squared distance to its code).
        restart_sampling="uniform",
        # vqkd_encoder_base_decoder_3x768x12_clip: 3 blocks, 768 wide, 12 heads, patch 1.
        decoder_width=768,
        decoder_depth=3,
        decoder_heads=12,
        decoder_mlp_dim=0,  # 0 = 4 * decoder_width
        # The width of the teacher's features the decoder predicts (the reference's
        # decoder_out_dim: 512 for CLIP, 768 for DINO ViT-B); 0: read from the teacher run.
        decoder_out_dim=0,
      )
    )

  def __init__(self, config, run, mesh):
    super().__init__(config, run, mesh)
    cfg, model = config.vqkd, config.model
    if model.name != "vit":
      raise ValueError(
        f"VQ-KD's encoder is a ViT (one code per patch); got config.model.name={model.name!r}: "
        "set --config.model.name=vit."
      )
    for key in ("num_codes", "code_dim", "decoder_width", "decoder_depth", "decoder_heads"):
      if cfg[key] < 1:
        raise ValueError(f"config.vqkd.{key}={cfg[key]} must be >= 1.")
    if cfg.decoder_width % cfg.decoder_heads:
      raise ValueError(
        f"config.vqkd.decoder_width={cfg.decoder_width} is not divisible by "
        f"decoder_heads={cfg.decoder_heads}."
      )
    if not 0 <= cfg.decay < 1 or cfg.beta < 0 or cfg.dead_code_threshold < 0:
      raise ValueError(
        f"config.vqkd: decay={cfg.decay} must be in [0, 1), beta={cfg.beta} and "
        f"dead_code_threshold={cfg.dead_code_threshold} >= 0 (the reference: 0.99, 1.0, 0)."
      )
    if cfg.restart_sampling not in RESTART_SAMPLING:
      raise ValueError(
        f"config.vqkd.restart_sampling={cfg.restart_sampling!r}; choose one of {RESTART_SAMPLING}."
      )
    if cfg.teacher_weights not in TEACHER_WEIGHTS:
      raise ValueError(
        f"config.vqkd.teacher_weights={cfg.teacher_weights!r}; choose one of {TEACHER_WEIGHTS}."
      )
    self.grid = run.image_size // model.patch_size
    if cfg.random_teacher and cfg.teacher_workdir:
      raise ValueError(
        "config.vqkd.random_teacher=True and teacher_workdir are both set: choose one."
      )
    if cfg.decoder_out_dim < 0:
      raise ValueError(f"config.vqkd.decoder_out_dim={cfg.decoder_out_dim} must be >= 0.")
    # The teacher run is read when first needed (network() with decoder_out_dim 0, or the
    # run's initialisation), never when the method is built.
    self._teacher_info = None
    self._teacher_weights = None

  def teacher_info(self) -> dict:
    """{"model": the teacher's config.model, "normalize": its input normalisation, "run": its
    config.json, "width": its feature width}, read (once) and checked against this run."""
    if self._teacher_info is not None:
      return self._teacher_info
    cfg, model = self.config.vqkd, self.config.model
    if cfg.random_teacher:
      run_config, teacher = {}, frozen_copy(model)
      normalize = self.config.augment.normalize
    else:
      if not cfg.teacher_workdir:
        raise ValueError(
          "VQ-KD needs a teacher run: --config configs/vqkd_vit_fashion_mnist.py:TEACHER_DIR "
          f"(or --config.vqkd.teacher_workdir=DIR); {TEACHER_HINT}."
        )
      run_config = read_run_config(cfg.teacher_workdir, "vqkd.teacher_workdir", TEACHER_HINT)
      teacher = model_config_of(run_config, model)
      if teacher.name != "vit":
        raise ValueError(
          f"config.vqkd.teacher_workdir={cfg.teacher_workdir!r} trained a {teacher.name!r} "
          "backbone; VQ-KD distils per-patch features: give a run with a ViT (DINO, DINOv2, "
          "MoCo v3, MAE, ...)."
        )
      tp = teacher.patch_size
      if self.run.image_size % tp or self.run.image_size // tp != self.grid:
        raise ValueError(
          f"The teacher ({cfg.teacher_workdir}) has patch size {tp}: at "
          f"dataset.image_size={self.run.image_size} its patch grid is not this tokenizer's "
          f"{self.grid}x{self.grid} (patch {model.patch_size}); set "
          f"--config.model.patch_size={tp} (VQ-KD predicts the teacher's feature of each patch)."
        )
      normalize = (run_config.get("augment") or {}).get("normalize", "none")
    width = vit_dims(teacher.variant, teacher.hidden_size, teacher.num_layers, teacher.num_heads)[0]
    if cfg.decoder_out_dim and cfg.decoder_out_dim != width:
      raise ValueError(
        f"config.vqkd.decoder_out_dim={cfg.decoder_out_dim}, but the teacher's features are "
        f"{width}-d: set --config.vqkd.decoder_out_dim={width} (or 0: the teacher's width)."
      )
    self._teacher_info = {
      "model": teacher,
      "normalize": normalize,
      "run": run_config,
      "width": width,
    }
    return self._teacher_info

  # ---- networks

  def teacher_network(self) -> ViT:
    return make_backbone(self.teacher_info()["model"], self.config.dtype)

  def network(self):
    cfg = self.config.vqkd
    decoder = ViT(
      width=cfg.decoder_width,
      depth=cfg.decoder_depth,
      num_heads=cfg.decoder_heads,
      mlp_dim=cfg.decoder_mlp_dim,
      patch_size=1,  # one token per code
      posemb="learn",
      pool="gap",
      class_token=True,
      dtype=get_dtype(self.config.dtype),
    )
    return VQKDNetwork(
      backbone=make_backbone(self.config.model, self.config.dtype),
      code_dim=cfg.code_dim,
      decoder=decoder,
      out_dim=self.config.vqkd.decoder_out_dim or self.teacher_info()["width"],
    )

  def views(self):
    # run_vqkd_training.py: RandomResizedCrop + flip, --color_jitter 0.
    no_colour = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
    return (ViewSpec.from_config(self.config.augment, self.run.image_size, **no_colour),)

  # ---- state

  def teacher_params(self, rng):
    """The teacher's backbone params: loaded from teacher_workdir (once), or random."""
    teacher = self.teacher_network()
    inputs = jnp.zeros((2, self.run.image_size, self.run.image_size, self.run.channels))
    if self.config.vqkd.random_teacher:
      return teacher.init(rng, inputs, train=False)["params"]
    if self._teacher_weights is None:
      cfg = self.config.vqkd
      tree, step = load_run_checkpoint(
        cfg.teacher_workdir, cfg.teacher_step, "vqkd.teacher_workdir"
      )
      method = self.teacher_info()["run"].get("method")
      weights = cfg.teacher_weights
      if weights == "auto":
        weights = TEACHER_EVALUATED.get(method, "student")
      source = tree
      if weights == "teacher":
        source = (tree.get("method_state") or {}).get("teacher")
        if not source:
          raise ValueError(
            f"config.vqkd.teacher_weights='teacher': {cfg.teacher_workdir} (method {method!r}) "
            "has no EMA teacher; set --config.vqkd.teacher_weights=student."
          )
      if "backbone" not in (source.get("params") or {}):
        raise ValueError(
          f"{cfg.teacher_workdir}: the checkpoint (method {method!r}) has no `backbone`."
        )
      self._teacher_weights = source["params"]["backbone"]
      logging.info(
        "VQ-KD teacher: %s step %d (%s weights of a %s run)",
        cfg.teacher_workdir,
        step,
        weights,
        method,
      )
    expected = jax.eval_shape(lambda: teacher.init(jax.random.key(0), inputs, train=False))
    check_same_shapes(
      expected["params"], self._teacher_weights, f"vqkd teacher {self.config.vqkd.teacher_workdir}"
    )
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), self._teacher_weights)

  def init_state(self, rng, variables):
    cfg = self.config.vqkd
    k, d = cfg.num_codes, cfg.code_dim
    if cfg.kmeans_init:
      codebook = jnp.zeros((k, d), jnp.float32)  # replaced by k-means on the first batch
    else:
      codebook = vq.l2_normalize(jax.random.normal(jax.random.fold_in(rng, 2), (k, d)))
    return {
      "teacher": {"params": self.teacher_params(jax.random.fold_in(rng, 1))},
      "codebook": codebook,
      "codebook_ready": jnp.asarray(not cfg.kmeans_init),
      # At the threshold (Jukebox's k_elem: ones for threshold 1): a code never used restarts
      # after the first step, a used one once its EMA decays below it. 0: the reference's zeros.
      "usage": jnp.full((k,), cfg.dead_code_threshold, jnp.float32),
    }

  # ---- the step

  def teacher_features(self, teacher_params, images):
    """The frozen teacher's final-norm patch tokens [B, N, D_t] (eval mode, no gradient)."""
    teacher = self.teacher_network()
    x = renormalize(images, self.config.augment.normalize, self.teacher_info()["normalize"])
    tokens = teacher.apply({"params": teacher_params}, x, train=False, return_tokens=True)
    return lax.stop_gradient(tokens[:, teacher.num_prefix_tokens :].astype(jnp.float32))

  def loss(self, params, batch_stats, method_state, batch, rng):
    cfg = self.config.vqkd
    (images,) = batch["views"]
    b = images.shape[0]
    drop_rng, kmeans_rng, restart_rng = jax.random.split(rng, 3)
    target = self.teacher_features(method_state["teacher"]["params"], images)
    net = self.network()
    variables = {"params": params}
    z, features = net.apply(
      variables, images, train=True, rngs={"dropout": drop_rng}, method=VQKDNetwork.encode
    )
    z = vq.l2_normalize(z)  # [B, N, d]
    flat = lax.stop_gradient(z).reshape(-1, cfg.code_dim)
    codebook = method_state["codebook"]
    if cfg.kmeans_init:  # the first step's codebook: k-means of its (global) batch
      codebook = lax.cond(
        method_state["codebook_ready"],
        lambda: codebook,
        lambda: vq.spherical_kmeans(kmeans_rng, flat, cfg.num_codes, cfg.kmeans_iters)[0],
      )
    z_q, ids, quant_loss = vq.quantize(z, codebook, cfg.beta)
    rec = net.apply(
      variables,
      z_q.reshape(b, self.grid, self.grid, cfg.code_dim),
      train=True,
      rngs={"dropout": drop_rng},
      method=VQKDNetwork.decode,
    )
    rec_loss = vq.cosine_distance_loss(rec, target)
    counts, sums = vq.codebook_statistics(z, ids, cfg.num_codes)
    new_codebook = vq.ema_codebook_update(codebook, counts, sums, cfg.decay)
    usage = vq.ema_usage_update(method_state["usage"], counts, cfg.decay)
    restarted = jnp.zeros((), jnp.int32)
    if cfg.dead_code_threshold > 0:
      if cfg.restart_sampling == "error":  # k-means++'s D^2: patches the codes serve worst
        error = jnp.sum((flat - lax.stop_gradient(z_q).reshape(flat.shape)) ** 2, axis=-1)
        candidates = vq.sample_rows_by_weight(restart_rng, flat, error, cfg.num_codes)
      else:
        candidates = vq.sample_rows(restart_rng, flat, cfg.num_codes)
      new_codebook, usage, restarted = vq.restart_dead_codes(
        new_codebook, usage, candidates, cfg.dead_code_threshold
      )
    used, perplexity = vq.code_statistics(counts)
    metrics = {
      "rec_loss": rec_loss,
      "rec_loss_constant_code": vq.constant_code_rec_loss(target),
      "quant_loss": quant_loss,
      "codebook_usage": used,
      "codebook_perplexity": perplexity,
      "codes_restarted": restarted.astype(jnp.float32),
      PROBE_FEATURES: features,
    }
    new_state = dict(
      method_state,
      codebook=new_codebook,
      usage=usage,
      codebook_ready=jnp.asarray(True),
    )
    return quant_loss + rec_loss, (metrics, batch_stats, new_state)
