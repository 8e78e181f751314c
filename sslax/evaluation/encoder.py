"""An `Encoder`: a frozen network that maps images to features, what every protocol takes.

Four ways to get one, all ending in the same dataclass:

  from_train_state(state, backbone, ...)   the live train state's backbone (end of training)
  from_checkpoint(workdir, config, backbone, ...)   DIR's newest checkpoint, backbone only,
                                           checked against the config's model
  from_variables(backbone, variables, ...)  variables the caller made, e.g. the random-init
                                           baseline: the backbone of the whole network's
                                           initialisation with config.seed (`backbone_variables`
                                           of the trainer's step-0 state)
  raw_pixels(...)                          no network: the preprocessed pixels, flattened

The backbone module (anything with `apply(variables, images, train=False) -> [B, D]`) is handed
in by the caller: evaluation does not build methods. Image-text models (CLIP, SigLIP) come as
an encoder whose module is the image tower (`ModuleMethod(network, "encode_image")` over the
whole model's variables) and whose `text` is the text tower.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sslax import checkpoint, features, sharding
from sslax import workdir as workdir_lib

PRETRAINED, RANDOM_INIT, RAW_PIXELS = "pretrained", "random_init", "raw_pixels"


@dataclasses.dataclass(frozen=True)
class TextTower:
  """The text side of an image-text model: token ids -> joint embeddings."""

  encode: Callable  # (variables, tokens int32 [B, L]) -> [B, E]
  variables: Any
  tokenizer: Any  # sslax.data.text.ByteTokenizer (the one saved with the checkpoint)
  context_length: int


@dataclasses.dataclass(frozen=True)
class Encoder:
  """A frozen network: images [B, S, S, C] (evaluation view, scaled to [0, 1]) -> [B, D]."""

  name: str  # "pretrained" | "random_init" | "raw_pixels" (the key of its results)
  module: Any  # .apply(variables, images, train=False) -> [B, D]; None for raw pixels
  variables: Any  # {"params", "batch_stats"} of `module`; None for raw pixels
  image_size: int  # side of the evaluation view
  channels: int  # input channels the module was built for (1 grey, 3 RGB)
  mesh: jax.sharding.Mesh
  step: int  # training step of the variables (0: untrained)
  text: TextTower | None = None  # image-text models only
  # The evaluation view (`augment.center_view`): config.eval.crop_fraction and
  # config.augment.normalize, so features see the inputs training did. None: the run's config
  # decides (`with_preprocessing`, which `protocols.run` applies); unset at extraction: 1.0 and
  # "none" (the whole image in [0, 1]).
  crop_fraction: float | None = None
  normalize: str | None = None

  @property
  def is_raw_pixels(self) -> bool:
    return self.module is None

  @property
  def preprocessing(self) -> dict:
    """The `augment.center_view` arguments of this encoder's evaluation view."""
    return {
      "crop_fraction": 1.0 if self.crop_fraction is None else float(self.crop_fraction),
      "normalize": "none" if self.normalize is None else self.normalize,
    }

  def features(self, source, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (features [N, D] float32, labels [N] int32) of every example of `source`, gathered
    on every process (for small splits; the frozen-feature protocols use `feature_bank`)."""
    return self._extract(source, batch_size, sharded=False)

  def feature_bank(self, source, batch_size: int) -> features.FeatureBank:
    """The features of every example of `source` as a bank whose rows stay sharded over
    `mesh` (each process reads only its rows of the split)."""
    return self._extract(source, batch_size, sharded=True)

  def _extract(self, source, batch_size: int, *, sharded: bool):
    return features.extract_features(
      self.module,
      self.variables,
      source,
      image_size=self.image_size,
      batch_size=batch_size,
      mesh=self.mesh,
      raw_pixels=self.is_raw_pixels,
      sharded=sharded,
      **self.preprocessing,
    )


def with_preprocessing(enc: Encoder, config) -> Encoder:
  """`enc` with the evaluation view of the run's config where it has none of its own:
  crop_fraction = config.eval.crop_fraction, normalize = config.augment.normalize (the
  normalisation the training views had)."""
  return dataclasses.replace(
    enc,
    crop_fraction=config.eval.crop_fraction if enc.crop_fraction is None else enc.crop_fraction,
    normalize=config.augment.normalize if enc.normalize is None else enc.normalize,
  )


class ModuleMethod:
  """`module.apply(variables, x, method=<name>)` behind the backbone interface: e.g. the image
  tower of an image-text model, `ModuleMethod(network, "encode_image")`."""

  def __init__(self, module, method: str):
    self.module, self.method = module, method

  def apply(self, variables, x, train: bool = False):
    return self.module.apply(
      variables, x, train=train, method=getattr(type(self.module), self.method)
    )


def backbone_variables(params, batch_stats=None) -> dict:
  """The `backbone` part of a whole network's params and BatchNorm statistics."""
  variables = {"params": params["backbone"]}
  if batch_stats and "backbone" in batch_stats:
    variables["batch_stats"] = batch_stats["backbone"]
  return variables


def from_variables(
  backbone,
  variables,
  *,
  name: str,
  image_size: int,
  channels: int,
  mesh,
  step: int = 0,
  text: TextTower | None = None,
) -> Encoder:
  return Encoder(name, backbone, variables, int(image_size), int(channels), mesh, int(step), text)


def from_train_state(
  state, backbone, *, image_size: int, channels: int, mesh, name: str = PRETRAINED
) -> Encoder:
  """The backbone of a live TrainState (params["backbone"], batch_stats["backbone"])."""
  return from_variables(
    backbone,
    backbone_variables(state.params, state.batch_stats),
    name=name,
    image_size=image_size,
    channels=channels,
    mesh=mesh,
    step=int(jax.device_get(state.step)),
  )


def raw_pixels(*, image_size: int, channels: int, mesh, step: int = 0) -> Encoder:
  """The no-network baseline: preprocessed pixels, flattened."""
  return Encoder(RAW_PIXELS, None, None, int(image_size), int(channels), mesh, int(step))


def load_checkpoint(workdir: str, step: int | None = None) -> tuple[dict, int]:
  """-> (DIR's checkpointed state as nested numpy dicts, its step); the newest by default."""
  try:
    return checkpoint.load_numpy(workdir, step)
  except FileNotFoundError:
    raise FileNotFoundError(
      f"No checkpoint in {workdir_lib.checkpoints_dir(workdir)} to evaluate; train first "
      f"(python -m sslax.main --config ... --workdir {workdir})."
    ) from None


def from_checkpoint(
  workdir: str, config, backbone, *, mesh, step: int | None = None, name: str = PRETRAINED
) -> Encoder:
  """The backbone of DIR's newest checkpoint (or of `step`), checked against config's model."""
  tree, step = load_checkpoint(workdir, step)
  variables = backbone_variables(tree["params"], tree.get("batch_stats"))
  channels = check_matches_config(backbone, variables, config, workdir, step)
  variables = _replicated(variables, mesh)  # on the devices once, not at every batch
  return from_variables(
    backbone,
    variables,
    name=name,
    image_size=config.dataset.image_size,
    channels=channels,
    mesh=mesh,
    step=step,
  )


def _replicated(tree, mesh):
  """Host numpy arrays -> jax Arrays replicated over `mesh` (also across processes: every
  process holds the same checkpoint)."""
  where = sharding.replicated(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_callback(np.shape(x), where, lambda index: np.asarray(x)[index]),
    tree,
  )


def check_matches_config(backbone, variables, config, workdir: str, step: int) -> int:
  """The checkpoint's backbone must have exactly the shapes the config's model builds.

  Returns the input channel count it was built for (only the stem's kernel depends on it).
  """
  size, got = config.dataset.image_size, _shapes(variables)
  wanted = {}
  for channels in (3, 1, 4):
    expected = jax.eval_shape(
      lambda c=channels: backbone.init(
        jax.random.key(0), jnp.zeros((1, size, size, c)), train=False
      )
    )
    wanted[channels] = _shapes(dict(expected))
    if wanted[channels] == got:
      return channels
  want = wanted[3]
  missing = sorted(set(want) - set(got))[:3]
  extra = sorted(set(got) - set(want))[:3]
  differ = sorted(k for k in set(want) & set(got) if want[k] != got[k])[:3]
  raise ValueError(
    f"The checkpoint at step {step} in {workdir} does not match the config's model "
    f"({config.model.to_dict()}): missing {missing}, unexpected {extra}, different shapes "
    f"{[(k, got[k], want[k]) for k in differ]}. Evaluate with the run's own config.json "
    f"(drop --config.model.* overrides) or point --workdir at the matching run."
  )


def _shapes(tree) -> dict[str, tuple]:
  return {
    "/".join(str(getattr(k, "key", k)) for k in path): tuple(np.shape(x))
    for path, x in jax.tree_util.tree_leaves_with_path(tree)
  }


__all__ = [
  "Encoder",
  "ModuleMethod",
  "PRETRAINED",
  "RANDOM_INIT",
  "RAW_PIXELS",
  "TextTower",
  "backbone_variables",
  "check_matches_config",
  "from_checkpoint",
  "from_train_state",
  "from_variables",
  "load_checkpoint",
  "raw_pixels",
  "with_preprocessing",
]
