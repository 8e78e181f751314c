"""Exemplar-CNN: the seed images (seeded, of the configured size, the only examples the training
stream reads, labelled by their position), the rotation, the loss against NumPy cross-entropy
of the classifier on the transformed views, 8 devices == 1 device, and the classifier kernel
sharded along its class axis (the pod config)."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from testkit.configs import tiny_config
from testkit.pretext import numpy_cross_entropy
from sslax import config as config_lib
from sslax import setup as setup_lib
from sslax import sharding
from sslax.data import pipeline, sources
from sslax.methods.exemplar import rotate, seed_indices

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def exemplar_config(num_classes=32):
  c = tiny_config("exemplar")  # fake data: 64 examples of 16 px
  c.exemplar.num_classes = num_classes
  return c


def test_seed_images_are_seeded_distinct_and_of_the_configured_size():
  a, b, c = seed_indices(1000, 100, 0), seed_indices(1000, 100, 0), seed_indices(1000, 100, 1)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert a.shape == (100,) and len(set(a.tolist())) == 100
  assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 1000
  with pytest.raises(ValueError, match="num_classes=65 surrogate classes"):
    seed_indices(64, 65, 0)


def test_training_stream_reads_only_the_seed_images_labelled_by_position(devices):
  c = exemplar_config()
  # Views without augmentation: each view is its source image, so it can be traced back.
  c.augment.crop_scale, c.augment.flip_prob = (1.0, 1.0), 0.0
  c.augment.jitter_prob, c.augment.grayscale_prob = 0.0, 0.0
  s = setup_lib.build(c, devices=devices[:1], data_free=False)
  full = sources.load_source(c, "train", c.dataset.num_train_examples)
  seeds = seed_indices(64, 32, c.exemplar.subset_seed)
  assert len(s.train_source) == 32 and s.run.num_train_examples == 32
  np.testing.assert_array_equal(s.train_source.images, full.images[seeds])
  dataset = pipeline.train_dataset(
    s.train_source, s.method.views(), global_batch=c.batch_size, seed=c.seed
  )
  seen = []
  for batch in dataset.take(4).as_numpy_iterator():  # two epochs of the 32 seed images
    index = batch["index"]
    assert index.min() >= 0 and index.max() < 32
    np.testing.assert_allclose(batch["views"][0], full.images[seeds[index]] / 255.0, atol=1e-6)
    seen.extend(index.tolist())
  assert sorted(seen) == sorted(list(range(32)) * 2)  # each seed image once per epoch


def test_a_streamed_dataset_is_refused(devices, monkeypatch):
  """Seed images are looked up by index: a TFDS stream (index -1) cannot hold them."""
  stream = sources.TFDSSource("imagenet2012", "train", None, 1281167, 1000, ())
  monkeypatch.setattr(sources, "load_source", lambda *args, **kwargs: stream)
  with pytest.raises(ValueError, match="'imagenet2012' is streamed from TFDS"):
    setup_lib.build(exemplar_config(), devices=devices[:1])


def test_rotation_turns_images_about_their_centre():
  x = np.random.default_rng(0).uniform(size=(3, 5, 5, 2)).astype(np.float32)
  out = np.asarray(rotate(jnp.asarray(x), jnp.asarray([0.0, np.pi / 2, np.pi])))
  np.testing.assert_allclose(out[0], x[0], atol=1e-6)
  np.testing.assert_allclose(out[1], np.rot90(x[1], -1), atol=1e-5)
  np.testing.assert_allclose(out[2], np.rot90(x[2], 2), atol=1e-5)


def _images(batch=16, size=16, seed=0):
  return np.random.default_rng(seed).uniform(size=(batch, size, size, 3)).astype(np.float32)


def loss_and_grads(config, devices, images, index):
  """-> host (loss, metrics, batch_stats, grads) of the method's loss, one compile."""
  s = setup_lib.build(config, devices=devices, data_free=True)
  state = setup_lib.init_state(s)
  batch = sharding.make_global_batch(s.mesh, {"views": (images,), "index": index})
  fn = jax.value_and_grad(
    lambda p: s.method.loss(p, state.batch_stats, {}, batch, jax.random.key(0)), has_aux=True
  )
  (loss, (metrics, stats, _)), grads = jax.jit(fn)(state.params)
  return jax.device_get((loss, metrics, stats, grads))


def _declared(config):
  config.dataset.train_size, config.dataset.channels = 64, 3
  return config


@pytest.mark.slow  # ~20 s; the wiring also runs in tests/methods/test_every_method.py
def test_loss_is_cross_entropy_of_the_classifier_on_rotated_views(devices):
  """Forward only (one compile; the gradients are checked in the 8-device test)."""
  s = setup_lib.build(_declared(exemplar_config()), devices=devices[:1], data_free=True)
  state = s.init_fn(jax.random.key(0))
  images, index = _images(), np.arange(16, dtype=np.int32)[::-1].copy()
  batch = {"views": (jnp.asarray(images),), "index": jnp.asarray(index)}

  def fn(params):
    loss, (metrics, _, _) = s.method.loss(params, state.batch_stats, {}, batch, jax.random.key(0))
    rotated = s.method.transform(batch["views"][0], jax.random.key(0))
    variables = {"params": params, "batch_stats": state.batch_stats}
    (_, logits), _ = s.method.network().apply(
      variables, rotated, train=True, mutable=["batch_stats"]
    )
    return loss, metrics, rotated, logits

  loss, metrics, rotated, logits = jax.device_get(jax.jit(fn)(state.params))
  assert not np.allclose(rotated, images)  # rotated by up to 20 degrees
  assert logits.shape == (16, 32)
  np.testing.assert_allclose(loss, numpy_cross_entropy(logits, index), rtol=1e-5)
  np.testing.assert_allclose(
    metrics["pretext_accuracy"], np.mean(np.argmax(logits, axis=1) == index), atol=1e-7
  )
  assert metrics["pretext_chance"] == pytest.approx(1 / 32)


@pytest.mark.slow
def test_eight_devices_equal_one_device_loss_and_grads(devices):
  c = _declared(exemplar_config())
  images, index = _images(seed=1), np.random.default_rng(2).permutation(32)[:16].astype(np.int32)
  l1, m1, s1, g1 = loss_and_grads(c, devices[:1], images, index)
  l8, m8, s8, g8 = loss_and_grads(c, devices, images, index)
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  np.testing.assert_allclose(m8["pretext_accuracy"], m1["pretext_accuracy"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g8, g1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), s8, s1)


def test_classifier_kernel_is_sharded_along_its_classes(devices):
  """With an "fsdp" mesh axis the FSDP rule splits the [D, K] kernel over K when K > D (the
  tiny ResNet has D = 64); the pod config shards only it (ResNet-50's convs stay whole)."""
  c = _declared(exemplar_config(num_classes=64))
  c.mesh.data, c.mesh.fsdp, c.model.fsdp_min_size = 1, -1, 1024
  c.model.width = 0.0625  # D = 32 < K = 64
  s = setup_lib.build(c, devices=devices, data_free=True)
  assert s.state_sharding.params["head"]["out"]["kernel"].spec == P(None, "fsdp")
  spec = importlib.util.spec_from_file_location("exemplar_tpu", f"{REPO}/configs/exemplar_tpu.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  pod = module.get_config()
  config_lib.validate(pod)
  s = setup_lib.build(pod, devices=devices, data_free=True)
  assert s.run.num_train_examples == pod.exemplar.num_classes == 16000
  params = s.state_sharding.params
  assert params["head"]["out"]["kernel"].spec == P(None, "fsdp")  # [2048, 16000] over 8 here
  sharded = [
    jax.tree_util.keystr(path)
    for path, x in jax.tree_util.tree_leaves_with_path(params)
    if x.spec != P()
  ]
  assert sharded == ["['head']['out']['kernel']"]
