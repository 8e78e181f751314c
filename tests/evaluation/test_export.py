"""Exported encoders (bundle, jax.export StableHLO, TF SavedModel) reproduce the in-library encoder
on raw uint8 images; the StableHLO one runs with jax alone and the SavedModel with TF alone."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sslax
from testkit.evaluation import trained_workdir
from sslax import evaluate, export
from sslax import workdir as workdir_lib
from sslax.data import augment, sources

# Imports that the exported artifacts must not need, blocked in the subprocess that runs them.
_BLOCKER = textwrap.dedent("""
    import sys

    class _Blocker:
      def __init__(self, names):
        self.names = names
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
          raise ImportError(f"{name} is blocked: the exported encoder must not need it")
        return None

    sys.meta_path.insert(0, _Blocker(set(sys.argv[1].split(","))))
    """)

_RUN_STABLEHLO = _BLOCKER + textwrap.dedent("""
    import numpy as np
    import jax
    exported = jax.export.deserialize(bytearray(open(sys.argv[2], "rb").read()))
    images = np.load(sys.argv[3])
    np.savez(sys.argv[4], b3=np.asarray(exported.call(images[:3])),
             b5=np.asarray(exported.call(images[:5])))
    assert not any(m.split(".")[0] in ("flax", "sslax") for m in sys.modules)
    """)

_RUN_SAVEDMODEL = _BLOCKER + textwrap.dedent("""
    import numpy as np
    import tensorflow as tf
    serve = tf.saved_model.load(sys.argv[2]).signatures["serving_default"]
    images = np.load(sys.argv[3])
    np.savez(sys.argv[4], **{f"b{n}": serve(images=tf.constant(images[:n]))["features"].numpy()
                             for n in (3, 5)})
    assert not any(m.split(".")[0] in ("jax", "flax", "sslax") for m in sys.modules)
    """)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  return trained_workdir(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(trained, devices):
  """Raw test images and the features the library's evaluation path computes for them."""
  config = workdir_lib.load_config(trained)
  enc = evaluate.restore_encoder(config, trained)  # what every protocol evaluates
  source = sources.get_source("fake", "test", image_size=16, num_examples=8, seed=0)
  features, _ = enc.features(source, batch_size=8)
  return source.images, features


def _run_isolated(script, blocked, *args):
  r = subprocess.run(
    [sys.executable, "-c", script, ",".join(blocked), *map(str, args)],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-3000:]


def test_bundle_round_trip(trained, reference, tmp_path):
  images, expected = reference
  out = str(tmp_path / "bundle")
  assert export.main(["--workdir", trained, "--out", out, "--format", "bundle"]) == 0
  spec = json.loads(open(os.path.join(out, "encoder.json")).read())
  assert spec["preprocessing"]["image_size"] == 16 and spec["preprocessing"]["channels"] == 3
  assert spec["preprocessing"]["scale"] == pytest.approx(1 / 255) and spec["source"]["step"] == 4
  encoder = sslax.load_encoder(out)  # the lazy top-level export
  assert encoder.feature_dim == 64
  np.testing.assert_allclose(encoder(images), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(encoder(images[:3]), expected[:3], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="uint8"):
    encoder(images.astype(np.float32))


def test_stablehlo_round_trip_without_flax_or_sslax(trained, reference, tmp_path):
  images, expected = reference
  out = tmp_path / "stablehlo"
  spec = export.export(trained, str(out), "stablehlo")
  assert spec["platforms"] == ["cpu", "cuda"] and spec["input_shape"] == ["batch", 16, 16, 3]
  np.save(tmp_path / "images.npy", images)
  _run_isolated(
    _RUN_STABLEHLO,
    ["flax", "sslax", "tensorflow", "orbax"],
    out / "encoder.jax_exported",
    tmp_path / "images.npy",
    tmp_path / "out.npz",
  )
  with np.load(tmp_path / "out.npz", allow_pickle=False) as got:  # two batch sizes
    np.testing.assert_allclose(got["b3"], expected[:3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["b5"], expected[:5], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(export.load_encoder(str(out))(images), expected, rtol=1e-5, atol=1e-6)


def test_savedmodel_round_trip_with_tensorflow_alone(trained, reference, tmp_path):
  images, expected = reference
  out = tmp_path / "savedmodel"
  assert export.main(["--workdir", trained, "--out", str(out), "--format", "savedmodel"]) == 0
  np.save(tmp_path / "images.npy", images)
  _run_isolated(
    _RUN_SAVEDMODEL,
    ["jax", "jaxlib", "flax", "sslax", "orbax"],
    out,
    tmp_path / "images.npy",
    tmp_path / "out.npz",
  )
  with np.load(tmp_path / "out.npz", allow_pickle=False) as got:
    np.testing.assert_allclose(got["b3"], expected[:3], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["b5"], expected[:5], rtol=1e-4, atol=1e-5)


def test_preprocessing_matches_center_view_on_other_sizes():
  """Non-square and larger/smaller raw images: same crop and bilinear resize as the pipeline."""
  rng = np.random.default_rng(0)
  spec = export.preprocessing_spec(16, 3)
  for shape in ((2, 24, 40, 3), (2, 11, 9, 3), (2, 16, 16, 3)):
    raw = rng.integers(0, 256, size=shape, dtype=np.uint8)
    expected = np.stack([augment.center_view(im, 16).numpy() for im in raw])
    np.testing.assert_allclose(np.asarray(export.preprocess(raw, spec)), expected, atol=2e-6)
  with pytest.raises(ValueError, match="raw images"):
    export.preprocess(np.zeros((2, 16, 16, 1), np.uint8), spec)


def test_bad_format_and_missing_bundle(trained, tmp_path):
  with pytest.raises(SystemExit):
    export.main(["--workdir", trained, "--out", str(tmp_path / "x"), "--format", "pickle"])
  # The override grammar of sslax.main and sslax.evaluate: an unknown key fails, nothing written.
  args = ["--workdir", trained, "--out", str(tmp_path / "x"), "--format", "bundle"]
  assert export.main(args + ["--config.model.widht=0.5"]) == 2
  assert not os.path.exists(tmp_path / "x")
  with pytest.raises(FileNotFoundError, match="encoder.json"):
    export.load_encoder(str(tmp_path))
