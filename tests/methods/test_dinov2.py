"""DINOv2 as a method: the whole train step on 8 devices == 1, the loss equals an independent
NumPy version of the reference's forward_backward on the network's own outputs, masked
patches only reach the iBOT term, the schedules and lr multipliers are the reference's, and
bad configs name the fix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from testkit.configs import tiny_config
from testkit.steps import assert_trees_close, max_abs_change
from sslax import setup as setup_lib
from sslax import sharding, train
from sslax.methods import dinov2 as dinov2_method
from sslax.methods.dinov2 import DINOv2Network
from sslax.models import make_backbone
from sslax.models.dino_head import DINOHead


def dinov2_config():
  c = tiny_config("dinov2")  # 64 fake examples, batch 16: 4 steps per epoch
  c.model.name = "vit"
  c.model.variant = "custom"
  c.model.hidden_size = 16
  c.model.num_layers = 2
  c.model.num_heads = 2
  c.model.patch_size = 4  # 16 px: 4 x 4 patches
  c.model.layerscale_init = 0.5  # DINOv2: 1e-5; at init that makes every class token alike (KoLeo distances ~1e-5, float32 noise)
  c.model.mask_token = True
  c.dinov2.out_dim = 32
  c.dinov2.hidden_dim = 32
  c.dinov2.bottleneck_dim = 16
  c.dinov2.num_local_crops = 2
  c.dinov2.local_crop_size = 8
  c.dinov2.mask_group_size = 4  # 32 global crops; 8 devices hold 4 each
  c.dinov2.warmup_teacher_temp_epochs = 1
  c.dinov2.freeze_last_layer_epochs = 0.0
  c.optimizer.name = "adamw"
  c.optimizer.base_lr = 1e-3
  c.optimizer.weight_decay = 0.04
  c.optimizer.grad_clip_norm = 3.0
  c.optimizer.grad_clip_mode = "per_module"
  return c


def _batches(config, num, seed=0):
  rng = np.random.default_rng(seed)
  cfg = config.dinov2
  sizes = [config.dataset.image_size] * 2 + [cfg.local_crop_size] * cfg.num_local_crops
  out = []
  for _ in range(num):
    colour = rng.uniform(0.1, 0.7, size=(config.batch_size, 1, 1, 3))
    views = tuple(
      (colour + 0.3 * rng.uniform(size=(config.batch_size, s, s, 3))).astype(np.float32)
      for s in sizes
    )
    out.append({"views": views, "label": np.zeros(config.batch_size, np.int32)})
  return out


def _run(config, devices, batches):
  s = setup_lib.build(config, devices=devices)
  state = setup_lib.init_state(s)
  initial = jax.device_get(state)
  step = train.make_train_step(s)
  for b in batches:
    state, metrics = step(state, sharding.make_global_batch(s.mesh, b))
  return initial, jax.device_get(state), jax.device_get(metrics)


@pytest.mark.slow  # 1-2 min each (two compiles of the whole step); the losses' 8 == 1 tests are fast
@pytest.mark.parametrize("centering", ["centering", "sinkhorn_knopp"])
def test_train_step_eight_devices_equal_one_device(devices, centering):
  c = dinov2_config()
  c.dinov2.centering = centering
  batches = _batches(c, 2)
  init, s1, m1 = _run(c, devices[:1], batches)
  _, s8, m8 = _run(c, devices, batches)
  for key in m1:
    np.testing.assert_allclose(m8[key], m1[key], rtol=1e-4, atol=1e-6, err_msg=key)
  assert_trees_close(s8.params, s1.params, rtol=1e-4, atol=1e-5)
  assert_trees_close(s8.method_state, s1.method_state, rtol=1e-4, atol=1e-5)
  assert max_abs_change(s1.params, init.params) > 1e-4
  assert m1["ibot_loss"] > 0 and m1["koleo_loss"] != 0
  # Some global crops were masked, within the reference's ratio range on average.
  assert 0.02 < m1["masked_ratio"] < 0.5
  if centering == "centering":
    assert np.abs(s1.method_state["patch_center"]).max() > 0


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _koleo(x, eps=1e-8):
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
  dots = x @ x.T
  np.fill_diagonal(dots, -np.inf)
  d = np.linalg.norm(x - x[dots.argmax(1)] + eps, axis=1)
  return -np.log(d + eps).mean()


def test_loss_equals_numpy_reference_on_the_networks_outputs(devices):
  """The method's loss == the reference's forward_backward in NumPy (centering), given the
  masks the method drew and the student / teacher outputs on every patch."""
  c = dinov2_config()
  s = setup_lib.build(c, devices=devices[:1])
  state = setup_lib.init_state(s)
  method = s.method
  # A non-zero center so that centering is exercised.
  ms = dict(state.method_state)
  ms["center"] = jnp.linspace(-0.1, 0.1, c.dinov2.out_dim)
  ms["patch_center"] = jnp.linspace(0.05, -0.05, c.dinov2.out_dim)
  batch = _batches(c, 1)[0]
  key = jax.random.key(3)
  loss, (metrics, _, _) = jax.jit(lambda p, ms, b, k: method.loss(p, state.batch_stats, ms, b, k))(
    state.params, ms, batch, key
  )

  b = c.batch_size
  views = batch["views"]
  rows = 2 * b
  masks = np.asarray(jax.jit(lambda k: method.sample_masks(k, rows))(jax.random.fold_in(key, 1)))
  globals_ = np.stack(views[:2], axis=1).reshape(rows, *views[0].shape[1:])  # image-major
  net, teacher_net = method.network(), method.network(teacher=True)
  variables = {"params": state.params}
  teacher_vars = {"params": ms["teacher"]["params"]}

  def tokens(n, v, x, m):
    return np.asarray(
      n.apply(
        v,
        x,
        train=True,
        masks=m,
        return_tokens=True,
        method=lambda mod, *a, **k: mod.backbone(*a, **k),
      ),
      np.float64,
    )

  def head(n, v, x):
    return np.asarray(
      n.apply(v, jnp.asarray(x, jnp.float32), method=DINOv2Network.patch_head), np.float64
    )

  rngs = {"dropout": jax.random.fold_in(key, 0)}
  student_tokens = np.asarray(
    net.apply(
      variables,
      jnp.asarray(globals_),
      train=True,
      masks=jnp.asarray(masks),
      return_tokens=True,
      rngs=rngs,
      method=lambda mod, *a, **k: mod.backbone(*a, **k),
    ),
    np.float64,
  )
  teacher_tokens = tokens(teacher_net, teacher_vars, jnp.asarray(globals_), None)
  local = np.asarray(
    net.apply(
      variables,
      jnp.asarray(np.concatenate(views[2:], 0)),
      train=True,
      method=lambda mod, *a, **k: mod.backbone(*a, **k),
    ),
    np.float64,
  )  # [n_local * B, D], crop-major
  t_cls, s_cls = teacher_tokens[:, 0], student_tokens[:, 0]
  t_logits = head(teacher_net, teacher_vars, t_cls)  # [2B, K]
  temp = float(method.teacher_temperature(0))
  center, pcenter = np.asarray(ms["center"], np.float64), np.asarray(ms["patch_center"], np.float64)
  t_probs = _softmax((t_logits - center) / temp).reshape(b, 2, -1)
  s_global = head(net, variables, s_cls).reshape(b, 2, -1)
  s_local = head(net, variables, local).reshape(2, b, -1).transpose(1, 0, 2)
  s_all = np.concatenate([s_global, s_local], axis=1)  # [B, 4, K]
  log_s = np.log(_softmax(s_all / 0.1))
  total, terms = 0.0, 0
  for t in range(2):
    for v in range(4):
      if v != t:
        total += np.mean(-(t_probs[:, t] * log_s[:, v]).sum(-1))
        terms += 1
  dino = total / terms
  # iBOT over every patch, masked ones counted (the reference's `forward`).
  prefix = 1
  s_patch = head(net, variables, student_tokens[:, prefix:].reshape(-1, 16)).reshape(rows, 16, -1)
  t_patch = head(teacher_net, teacher_vars, teacher_tokens[:, prefix:].reshape(-1, 16)).reshape(
    rows, 16, -1
  )
  t_pprobs = _softmax((t_patch - pcenter) / temp)
  ce = -(t_pprobs * np.log(_softmax(s_patch / 0.1))).sum(-1)
  ibot = ((ce * masks).sum(-1) / np.maximum(masks.sum(-1), 1)).mean()
  s_cls_img = s_cls.reshape(b, 2, -1)
  koleo = _koleo(s_cls_img[:, 0]) + _koleo(s_cls_img[:, 1])
  np.testing.assert_allclose(metrics["dino_loss"], dino, rtol=2e-4)
  np.testing.assert_allclose(metrics["ibot_loss"], ibot, rtol=2e-4)
  np.testing.assert_allclose(metrics["koleo_loss"], koleo, rtol=2e-4)
  np.testing.assert_allclose(loss, dino + ibot + 0.1 * koleo, rtol=2e-4)
  assert masks.any(1).sum() == int(rows * 0.5)


def test_masked_patch_buffer_holds_exactly_the_masked_positions():
  rng = np.random.default_rng(0)
  masks = rng.random((8, 6)) < 0.3
  ids, weights = dinov2_method.masked_patch_ids(jnp.asarray(masks), 2, 30)
  ids, weights = np.asarray(ids), np.asarray(weights)
  for g in range(2):
    flat = masks[4 * g : 4 * g + 4].reshape(-1)
    (want,) = np.nonzero(flat)
    np.testing.assert_array_equal(ids[g, : len(want)], want)
    counts = masks[4 * g : 4 * g + 4].sum(1)
    np.testing.assert_allclose(weights[g, : len(want)], 1.0 / counts[want // 6])
    assert np.all(weights[g, len(want) :] == 0)


def test_buffer_size_bounds_every_drawn_group():
  group, n = 8, 16
  size = dinov2_method.masked_buffer_size(group, n, 0.5, (0.1, 0.5))
  c = dinov2_config()
  s = setup_lib.build(c, devices=jax.devices()[:1])
  draws = jax.jit(jax.vmap(lambda k: s.method.sample_masks(k, group)))(
    jax.random.split(jax.random.key(0), 200)
  )
  assert int(np.asarray(draws).sum(axis=(1, 2)).max()) <= size


def test_lr_multipliers_are_the_references_layer_decay():
  c = dinov2_config()
  c.dinov2.layer_decay = 0.5
  c.dinov2.patch_embed_lr_mult = 0.2
  s = setup_lib.build(c, devices=jax.devices()[:1])
  params = setup_lib.init_state(s).params
  mult = s.method.lr_multipliers(params)
  depth = 2
  # The reference's get_vit_lr_decay_rate: decay ** (L + 1 - layer_id).
  assert float(mult["backbone"]["cls_token"]) == 0.5 ** (depth + 1)
  assert float(mult["backbone"]["mask_token"]) == 0.5 ** (depth + 1)
  np.testing.assert_allclose(float(mult["backbone"]["patch_embed"]["kernel"]), 0.2 * 0.5**3)
  assert float(mult["backbone"]["encoder"]["block0"]["mlp"]["fc1"]["kernel"]) == 0.5**2
  assert float(mult["backbone"]["encoder"]["block1"]["ls1"]["gamma"]) == 0.5
  assert float(mult["backbone"]["encoder_norm"]["scale"]) == 1.0
  assert all(float(x) == 1.0 for x in jax.tree.leaves(mult["dino_head"]))


def test_teacher_temperature_is_linear_per_step():
  c = dinov2_config()
  c.dinov2.warmup_teacher_temp_epochs = 2  # 8 steps
  s = setup_lib.build(c, devices=jax.devices()[:1])
  got = [float(s.method.teacher_temperature(i)) for i in range(10)]
  want = list(np.linspace(0.04, 0.07, 8)) + [0.07, 0.07]
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize(
  "key,value,match",
  [
    ("model.mask_token", False, "mask_token=True"),
    ("dinov2.local_crop_size", 6, "multiple of the ViT patch size"),
    ("dinov2.mask_group_size", 3, "mask_group_size"),
    ("dinov2.centering", "sk", "centering"),
    ("model.name", "resnet", "model.name=vit"),
  ],
)
def test_bad_configs_name_the_fix(key, value, match):
  c = dinov2_config()
  section, name = key.split(".")
  c[section][name] = value
  with pytest.raises(ValueError, match=match):
    setup_lib.build(c, devices=jax.devices()[:1])


def test_vits14_network_matches_the_reference_module_by_module():
  """DINOv2 ViT-S/14 + its DINOHead at 224 px, shapes only: the backbone's count is the
  reference's (tests/models/test_vit_dinov2.py), the head's layers are dinov2/layers/
  dino_head.py's mlp.0 / mlp.2 / mlp.4 Linear layers and the weight-normalised last_layer
  (weight_v [65536, 256], weight_g [65536, 1]; here kernel [256, 65536] and gain [1, 65536])."""
  c = dinov2_config()
  c.dataset.image_size = 224
  c.model.variant, c.model.hidden_size, c.model.num_layers, c.model.num_heads = "S", 0, 0, 0
  c.model.patch_size = 14
  c.model.layerscale_init = 1e-5
  net = DINOv2Network(backbone=make_backbone(c.model), dino_head=DINOHead(norm_last_layer=False))
  shapes = jax.eval_shape(
    lambda: net.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False)
  )["params"]
  head = jax.tree.map(lambda x: x.shape, shapes["dino_head"])
  assert head == {
    "dense0": {"kernel": (384, 2048), "bias": (2048,)},
    "dense1": {"kernel": (2048, 2048), "bias": (2048,)},
    "bottleneck": {"kernel": (2048, 256), "bias": (256,)},
    "last_layer": {"kernel": (256, 65536), "gain": (1, 65536)},
  }
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  assert count(shapes["backbone"]) == 21_629_184  # the reference's vit_small(patch 14), 224 px
  reference_head = (384 * 2048 + 2048) + (2048 * 2048 + 2048) + (2048 * 256 + 256)
  assert count(shapes["dino_head"]) == reference_head + 65536 * 256 + 65536
