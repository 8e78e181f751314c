"""The evaluation view and the input normalisation, end to end: config keys, the eval pipeline,
encoders and protocols see what training saw, and the recipes that quote a reference set the
reference's colour jitter and normalisation (tiny shapes, CPU only)."""

import dataclasses
import importlib.util
import os

import numpy as np
import pytest

from sslax import config as config_lib
from sslax import presets, sharding
from sslax.data import augment as A
from sslax.data import pipeline
from sslax.data.sources import ArraySource
from sslax.evaluation import encoder as encoder_lib
from sslax.evaluation import protocols
from sslax.evaluation.protocols import registry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _source(n=5, h=13, w=10, channels=3):
  rng = np.random.default_rng(0)
  return ArraySource(
    images=rng.integers(0, 256, size=(n, h, w, channels), dtype=np.uint8),
    labels=np.arange(n, dtype=np.int32) % 2,
    num_classes=2,
    class_names=("a", "b"),
    name="tiny",
  )


def _load(name):
  path = os.path.join(REPO, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


# ----------------------------------------------------------------------------- config


def test_schema_defaults_keep_the_demo_and_the_imagenet_preset_crops_224_of_256():
  c = config_lib.base_config("simclr")
  assert c.eval.crop_fraction == 1.0 and c.augment.normalize == "none"
  assert presets.fashion_mnist_cpu("simclr").eval.crop_fraction == 1.0
  assert presets.imagenet_tpu("simclr").eval.crop_fraction == 0.875


@pytest.mark.parametrize(
  "key, value, match",
  [
    ("augment.normalize", "imagnet", "augment.normalize"),
    ("augment.hue", 0.7, "hue"),
    ("augment.saturation", -0.2, "saturation"),
    ("eval.crop_fraction", 0.0, "crop_fraction"),
    ("eval.crop_fraction", 1.2, "crop_fraction"),
  ],
)
def test_validate_rejects_bad_preprocessing_values(key, value, match):
  c = presets.fashion_mnist_cpu("simclr")
  config_lib.validate(c)
  config_lib.apply_overrides(c, [f"{key}={value}"])
  with pytest.raises(ValueError, match=match):
    config_lib.validate(c)


def test_jitter_keys_take_overrides_and_survive_config_json():
  c = presets.fashion_mnist_cpu("byol")
  config_lib.apply_overrides(c, ["augment.saturation=0.2", "augment.hue=0.1"])
  back = config_lib.config_from_dict(c.to_dict())
  assert (back.augment.saturation, back.augment.hue, back.augment.brightness) == (0.2, 0.1, None)


# ----------------------------------------------------------------------------- evaluation


def test_eval_batches_are_the_configured_center_views():
  src = _source()
  (batch,) = pipeline.eval_batches(
    src, image_size=8, global_batch=8, crop_fraction=0.875, normalize="imagenet"
  )
  want = np.stack([A.center_view(im, 8, 0.875, "imagenet").numpy() for im in src.images])
  np.testing.assert_allclose(batch["image"][:5], want, atol=1e-6)
  assert batch["mask"].tolist() == [True] * 5 + [False] * 3


def test_encoders_extract_features_with_the_runs_view_and_normalisation(devices):
  src = _source()
  c = presets.fashion_mnist_cpu("simclr")
  c.augment.normalize = "imagenet"
  c.eval.crop_fraction = 0.875
  mesh = sharding.make_mesh({"data": -1})
  enc = encoder_lib.raw_pixels(image_size=8, channels=3, mesh=mesh)
  assert enc.preprocessing == {"crop_fraction": 1.0, "normalize": "none"}  # unset: plain
  enc = encoder_lib.with_preprocessing(enc, c)
  assert enc.preprocessing == {"crop_fraction": 0.875, "normalize": "imagenet"}
  feats, labels = enc.features(src, batch_size=8)
  want = np.stack([A.center_view(im, 8, 0.875, "imagenet").numpy() for im in src.images])
  np.testing.assert_allclose(feats, want.reshape(5, -1), atol=1e-6)
  assert labels.tolist() == src.labels.tolist()
  # An encoder's own setting wins over the config's.
  own = encoder_lib.raw_pixels(image_size=8, channels=3, mesh=mesh)
  own = encoder_lib.with_preprocessing(dataclasses.replace(own, normalize="none"), c)
  assert own.preprocessing == {"crop_fraction": 0.875, "normalize": "none"}


def test_every_protocol_gets_encoders_with_the_runs_preprocessing(monkeypatch, devices):
  seen = []

  def probe(encoders, ctx):
    seen.extend(enc.preprocessing for enc in encoders)
    return {}

  monkeypatch.setitem(registry.PROTOCOLS, "probe", registry.Protocol("probe", probe, "test"))
  c = presets.imagenet_tpu("dino", backbone="vit_s16")
  c.augment.normalize = "imagenet"
  enc = encoder_lib.raw_pixels(image_size=8, channels=3, mesh=sharding.make_mesh({"data": -1}))
  protocols.run("probe", [enc], registry.Context(config=c, workdir=None))
  assert seen == [{"crop_fraction": 0.875, "normalize": "imagenet"}]


# ----------------------------------------------------------------------------- recipes

BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
RECIPES = {  # config: (colour jitter of every view or None to skip, normalisation)
  "byol_tpu": (BYOL_JITTER, "none"),  # BYOL's JAX code does not normalise
  "barlow_twins_tpu": (BYOL_JITTER, "imagenet"),
  "vicreg_tpu": (BYOL_JITTER, "imagenet"),
  "mocov3_vits_tpu": (BYOL_JITTER, "imagenet"),
  "dino_vits16_tpu": (BYOL_JITTER, "imagenet"),
  "mocov2_tpu": ((0.4, 0.4, 0.4, 0.1), "imagenet"),
  "simsiam_tpu": ((0.4, 0.4, 0.4, 0.1), "imagenet"),
  "swav_tpu": ((0.8, 0.8, 0.8, 0.2), "swav"),
  "simclr_tpu": ((0.8, 0.8, 0.8, 0.2), "none"),  # SimCLR's TF code does not normalise
  "mae_vitb16_tpu": (None, "imagenet"),
  "clip_vitb32_tpu": (None, "clip"),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_tpu_recipes_views_have_the_references_jitter_and_normalisation(name, devices):
  from sslax import setup as setup_lib

  jitter, normalize = RECIPES[name]
  c = _load(name)
  method = setup_lib.build_method(c, sharding.make_mesh({"data": -1}, devices[:1]), data_free=True)
  views = method.views()
  assert views and all(v.normalize == normalize for v in views)
  if jitter is not None:
    assert all(v.jitter == pytest.approx(jitter) for v in views), [v.jitter for v in views]
  # CLIP evaluates on the whole (shorter-side) square, the others on 224 of 256.
  assert c.eval.crop_fraction == (1.0 if name == "clip_vitb32_tpu" else 0.875)
