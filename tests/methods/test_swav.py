"""SwAV as a method: multi-crop views through the real pipeline, prototype freezing in the
optimizer, unit prototypes, BN per crop-size group, config checks. The whole train step
8 devices == 1 is in test_swav_train_step.py, the collapse check in test_swav_collapse.py."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from testkit.configs import tiny_config
from sslax import setup as setup_lib
from sslax import config as config_lib, optim, sharding
from sslax.data import pipeline, sources
from sslax.methods.swav import group_by_size

from testkit import REPO


def swav_config():
  c = tiny_config("swav")
  c.swav.num_prototypes = 10
  c.swav.proj_hidden_dim = 32
  c.swav.proj_dim = 16
  c.swav.num_local_crops = 2
  c.swav.local_crop_size = 8
  c.swav.freeze_prototypes_steps = 1
  return c


def _method(config, devices):
  return setup_lib.build_method(config, sharding.make_mesh({"data": -1}, devices))


def _batches(views, n, rng=np.random.default_rng(0)):
  return [
    {
      "views": tuple(rng.uniform(size=(16, v.size, v.size, 3)).astype(np.float32) for v in views),
      "label": np.zeros(16, np.int32),
    }
    for _ in range(n)
  ]


def test_multicrop_views_through_the_pipeline_are_deterministic(devices):
  c = swav_config()
  c.swav.num_local_crops = 3
  views = _method(c, devices[:1]).views()
  assert [(v.size, v.crop_scale) for v in views] == [(16, (0.14, 1.0))] * 2 + [
    (8, (0.05, 0.14))
  ] * 3
  source = sources.get_source("fake", "train", image_size=16, num_examples=64)

  def first_batches():
    ds = pipeline.train_dataset(source, views, global_batch=16, seed=0)
    return [b for _, b in zip(range(2), ds.as_numpy_iterator())]

  run1, run2 = first_batches(), first_batches()
  for b1, b2 in zip(run1, run2):
    assert [v.shape for v in b1["views"]] == [(16, 16, 16, 3)] * 2 + [(16, 8, 8, 3)] * 3
    assert all(v.dtype == np.float32 for v in b1["views"])
    for v1, v2 in zip(b1["views"], b2["views"]):
      np.testing.assert_array_equal(v1, v2)
  # Crops of one image differ (each view has its own seed).
  assert np.abs(run1[0]["views"][0] - run1[0]["views"][1]).max() > 0.1


def test_optimizer_really_leaves_frozen_params_unchanged():
  """No update, no weight decay, no momentum or Adam moments while frozen; then normal."""
  params = {"backbone": {"kernel": jnp.ones((3, 2))}, "prototypes": {"kernel": jnp.ones((2, 4))}}
  grads = {
    "backbone": {"kernel": jnp.full((3, 2), 0.5)},
    "prototypes": {"kernel": jnp.full((2, 4), 0.5)},
  }
  frozen = lambda p: {k: jax.tree.map(lambda _: k == "prototypes", v) for k, v in p.items()}
  for name in ("sgd", "adamw", "lars"):
    opt = ml_collections.ConfigDict(
      dict(name=name, weight_decay=0.1, momentum=0.9, trust_coefficient=1e-3, grad_clip_norm=0.0)
    )
    base = optim.make_optimizer(opt, 0.1)
    tx = optim.freeze_for_steps(base, frozen, 2)
    p, state = params, tx.init(params)
    ref_p, ref_state = params["prototypes"], base.init(params)  # unfrozen reference
    for step in range(4):
      updates, state = tx.update(grads, state, p)
      p = optax.apply_updates(p, updates)
      assert np.abs(p["backbone"]["kernel"] - params["backbone"]["kernel"]).min() > 0
      if step < 2:
        np.testing.assert_array_equal(p["prototypes"]["kernel"], params["prototypes"]["kernel"])
      else:
        # After the freeze it behaves like a fresh optimizer started at step 2.
        ref_updates, ref_state = base.update(
          grads, ref_state, {"backbone": params["backbone"], "prototypes": ref_p}
        )
        ref_p = optax.apply_updates(ref_p, ref_updates["prototypes"])
        np.testing.assert_allclose(p["prototypes"]["kernel"], ref_p["kernel"], rtol=1e-6)
  assert optim.freeze_for_steps(base, frozen, 0) is base


def test_frozen_params_follow_the_global_lr_schedule_once_unfrozen():
  """The schedule is global: after a freeze of 2 steps, the first update uses lr(2), not lr(0)."""
  params = {"a": jnp.zeros((2, 2)), "b": jnp.zeros((2, 2))}
  grads = {"a": jnp.ones((2, 2)), "b": jnp.ones((2, 2))}
  schedule = lambda step: 1.0 + step  # lr 1, 2, 3, ...
  opt = ml_collections.ConfigDict(
    dict(name="sgd", weight_decay=0.0, momentum=0.0, grad_clip_norm=0.0)
  )
  tx = optim.freeze_for_steps(
    optim.make_optimizer(opt, schedule), lambda p: {"a": False, "b": True}, 2
  )
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
  # Step index 2 -> lr 3 for both groups (plain SGD: update = -lr * grad).
  np.testing.assert_allclose(updates["a"], -3.0)
  np.testing.assert_allclose(updates["b"], -3.0)


@pytest.fixture(scope="module")
def network_and_variables(devices):
  net = _method(swav_config(), devices[:1]).network()
  init = jax.jit(lambda rng: net.init(rng, jnp.zeros((2, 16, 16, 3)), train=False))
  return net, init(jax.random.key(0))


def test_prototypes_are_unit_vectors_in_the_forward_pass(network_and_variables):
  net, variables = network_and_variables
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(4, 16, 16, 3)), jnp.float32)
  _, z, scores = net.apply(variables, x, train=False)
  kernel = variables["params"]["prototypes"]["kernel"]
  np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
  unit = kernel / jnp.linalg.norm(kernel, axis=0, keepdims=True)
  np.testing.assert_allclose(scores, z @ unit, rtol=1e-5, atol=1e-6)
  params = dict(variables["params"], prototypes={"kernel": kernel * jnp.arange(1.0, 11.0)})
  _, _, rescaled = net.apply(dict(variables, params=params), x, train=False)
  np.testing.assert_allclose(rescaled, scores, rtol=1e-5, atol=1e-6)


def test_backbone_batch_norm_is_per_crop_size_group(network_and_variables):
  net, variables = network_and_variables
  rng = np.random.default_rng(2)
  views = [jnp.asarray(rng.uniform(size=(4, s, s, 3)), jnp.float32) for s in (16, 16, 8, 8)]
  groups = group_by_size(views)
  assert [g.shape for g in groups] == [(4, 2, 16, 16, 3), (4, 2, 8, 8, 3)]
  (features, _, scores), _ = net.apply(variables, groups, train=True, mutable=["batch_stats"])
  assert features.shape[:2] == scores.shape[:2] == (4, 4)
  backbone = lambda x: net.apply(
    variables,
    x,
    train=True,
    mutable=["batch_stats"],
    method=lambda m, x, train: m.backbone(x, train=train),
  )[0]
  # Each size group is normalised with its own batch statistics (rows image-major).
  for g, crops in ((groups[0], (0, 1)), (groups[1], (2, 3))):
    alone = backbone(g.reshape(-1, *g.shape[2:])).reshape(4, 2, -1)
    np.testing.assert_allclose(features[:, crops[0] : crops[1] + 1], alone, rtol=1e-4, atol=1e-5)


def test_config_checks_name_the_fix(devices):
  c = swav_config()
  c.swav.queue_length = 24
  with pytest.raises(ValueError, match="queue_length=24 must be 0"):
    _method(c, devices[:1])
  c = swav_config()
  c.swav.local_crop_scale = (0.5, 0.1)
  with pytest.raises(ValueError, match="local_crop_scale"):
    _method(c, devices[:1])


@pytest.mark.parametrize("name", ["swav_fashion_mnist", "swav_tpu"])
def test_configs_load_and_validate(name, devices):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  config_lib.check_unknown_keys(c)
  assert c.method == "swav"
  views = _method(c, devices[:1]).views()
  assert len(views) == 2 + c.swav.num_local_crops
  assert [v.size for v in views[:2]] == [c.dataset.image_size] * 2
  assert {v.size for v in views[2:]} == {c.swav.local_crop_size}
