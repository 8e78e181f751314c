"""VQ-KD as a method: the step's loss and codebook update equal NumPy on the network's own
outputs (k-means start, EMA update over the global batch, dead-code restarts), the whole train
step on 8 devices == 1, the teacher is read read-only from an sslax run, and a missing or
mismatched teacher fails naming the fix."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from testkit.configs import tiny_config
from testkit.steps import assert_trees_close, max_abs_change, run_steps

from sslax import checkpoint, sharding
from sslax import setup as setup_lib
from sslax import workdir as workdir_lib
from sslax.losses import vq
from sslax.methods.vqkd import VQKDNetwork, tokenizer_codes


def tiny_vit(c, mask_token=False):
  c.model.name, c.model.variant = "vit", "custom"
  c.model.hidden_size, c.model.num_layers, c.model.num_heads = 16, 1, 2
  c.model.patch_size = 4  # 16 px: a 4 x 4 grid
  c.model.mask_token = mask_token
  c.optimizer.name, c.optimizer.base_lr = "adamw", 1e-3
  c.checkpoint_every_steps = 100
  return c


def vqkd_config(teacher_workdir=""):
  c = tiny_vit(tiny_config("vqkd"))  # fake data, batch 16: 256 patches per batch
  c.vqkd.update(
    teacher_workdir=teacher_workdir,
    random_teacher=not teacher_workdir,
    num_codes=16,
    code_dim=4,
    decoder_width=16,
    decoder_depth=1,
    decoder_heads=2,
  )
  return c


def saved_run(config, workdir, step=5):
  """A run dir as the trainer leaves it (config.json + a checkpoint of the initial state),
  without training: the state is the one the run would start from."""
  s = setup_lib.build(config, devices=jax.devices()[:1])
  state = s.init_fn(jax.random.key(config.seed))  # not jitted: one compile fewer
  workdir_lib.write_config(str(workdir), config)
  manager = checkpoint.make_manager(
    str(workdir), save_every_steps=1, max_to_keep=2, use_async=False
  )
  checkpoint.save(manager, step, state, force=True)
  manager.wait_until_finished()
  return jax.device_get(state)


def _images(seed=0, n=16):
  rng = np.random.default_rng(seed)
  colour = rng.uniform(0.1, 0.7, size=(n, 1, 1, 3))
  return (colour + 0.3 * rng.uniform(size=(n, 16, 16, 3))).astype(np.float32)


def _batches(num):
  return [{"views": (_images(i),), "label": np.zeros(16, np.int32)} for i in range(num)]


def _np_ema(codebook, z, ids, decay):
  k = codebook.shape[0]
  counts = np.bincount(ids, minlength=k)
  sums = np.zeros_like(codebook)
  np.add.at(sums, ids, z)
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  means = np.where((counts > 0)[:, None], unit(sums / np.maximum(counts, 1)[:, None]), codebook)
  return unit(decay * codebook + (1 - decay) * means), counts


def _method_and_state(config, devices):
  """The method and its initial (params, method_state), initialised eagerly (no compile)."""
  method = setup_lib.build_method(config, sharding.make_mesh({"data": -1}, devices[:1]))
  variables = method.network().init(jax.random.key(0), jnp.zeros((2, 16, 16, 3)), train=False)
  return method, variables["params"], method.init_state(jax.random.key(1), variables)


@pytest.mark.parametrize(
  "kmeans_init,restart_sampling", [(False, "uniform"), (True, "uniform"), (True, "error")]
)
def test_step_equals_numpy_on_the_networks_outputs(kmeans_init, restart_sampling, devices):
  """loss = mean((e - z)^2) + mean(1 - cos(decoder(e), teacher)), e the nearest code of the
  l2-normalised encoder output z; the new codebook is the EMA of the batch's code means, after
  k-means of the batch when the codebook is not initialised yet; dead codes restart at random
  patches (uniform) or at patches drawn ~ their squared distance to their code (error)."""
  c = vqkd_config()
  c.vqkd.kmeans_init = kmeans_init
  c.vqkd.restart_sampling = restart_sampling
  c.vqkd.dead_code_threshold = 3.0  # the uniform share is 256 / 16 = 16: some codes fall below
  method, params, ms = _method_and_state(c, devices)
  images = _images()
  ms = dict(ms, usage=jnp.linspace(0.0, 20.0, 16))  # codes 0-2 are "dead"
  key = jax.random.key(7)
  loss, (metrics, _, new) = jax.jit(lambda p, ms, b, k: method.loss(p, {}, ms, b, k))(
    params, ms, {"views": (images,), "label": np.zeros(16, np.int32)}, key
  )

  _, kmeans_rng, restart_rng = jax.random.split(key, 3)
  net = method.network()
  z, _ = net.apply({"params": params}, images, train=True, method=VQKDNetwork.encode)
  z = np.asarray(z, np.float64)
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  flat = z.reshape(-1, 4)
  codebook = np.asarray(ms["codebook"], np.float64)
  if kmeans_init:
    assert not bool(ms["codebook_ready"]) and bool(new["codebook_ready"])
    codebook = np.asarray(vq.spherical_kmeans(kmeans_rng, jnp.asarray(flat, jnp.float32), 16)[0])
  d = (flat**2).sum(1)[:, None] + (codebook**2).sum(1)[None] - 2 * flat @ codebook.T
  ids = d.argmin(1)
  e = codebook[ids]
  rec = net.apply(
    {"params": params},
    jnp.asarray(e.reshape(16, 4, 4, 4), jnp.float32),
    train=True,
    method=VQKDNetwork.decode,
  )
  teacher = np.asarray(method.teacher_features(ms["teacher"]["params"], images), np.float64)
  rec = np.asarray(rec, np.float64)
  cos = (rec * teacher).sum(-1) / np.linalg.norm(rec, axis=-1) / np.linalg.norm(teacher, axis=-1)
  np.testing.assert_allclose(metrics["quant_loss"], np.mean((e - flat) ** 2), rtol=1e-4)
  np.testing.assert_allclose(metrics["rec_loss"], np.mean(1 - cos), rtol=1e-4)
  np.testing.assert_allclose(loss, metrics["quant_loss"] + metrics["rec_loss"], rtol=1e-6)

  want, counts = _np_ema(codebook, flat, ids, 0.99)
  usage = 0.99 * np.asarray(ms["usage"]) + 0.01 * counts
  dead = usage < 3.0
  assert 0 < dead.sum() < 16
  if restart_sampling == "error":  # inverse CDF of the squared quantisation errors
    cdf = np.cumsum(((flat - e) ** 2).sum(1))
    u = np.asarray(jax.random.uniform(restart_rng, (16,)), np.float64) * cdf[-1]
    candidates = flat[np.searchsorted(cdf, u, side="right")]
  else:
    candidates = np.asarray(vq.sample_rows(restart_rng, jnp.asarray(flat, jnp.float32), 16))
  want = np.where(dead[:, None], candidates / np.linalg.norm(candidates, axis=1)[:, None], want)
  np.testing.assert_allclose(new["codebook"], want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(new["usage"], np.where(dead, 3.0, usage), rtol=1e-5)
  assert metrics["codes_restarted"] == dead.sum()
  np.testing.assert_allclose(metrics["codebook_usage"], np.mean(counts > 0))


@pytest.mark.slow  # ~40 s on 2 loaded cores: two compiles of the whole step
def test_train_step_eight_devices_equal_one(devices):
  """k-means start, EMA codebook, usage and restarts from the GLOBAL batch: 8 devices == 1."""
  c = vqkd_config()
  c.vqkd.dead_code_threshold = 12.0
  batches = _batches(2)
  init, s1, m1 = run_steps(c, devices[:1], batches)
  _, s8, m8 = run_steps(c, devices, batches)
  for key in m1:
    np.testing.assert_allclose(m8[key], m1[key], rtol=1e-4, atol=1e-6, err_msg=key)
  assert_trees_close(s8.params, s1.params, rtol=1e-4, atol=1e-5)
  assert_trees_close(s8.method_state, s1.method_state, rtol=1e-4, atol=1e-5)
  assert max_abs_change(s1.params, init.params) > 1e-4
  assert bool(s1.method_state["codebook_ready"])
  np.testing.assert_allclose(np.linalg.norm(s1.method_state["codebook"], axis=1), 1.0, rtol=1e-5)


def test_teacher_is_the_runs_backbone_read_only(tmp_path, devices):
  teacher_dir = tmp_path / "teacher"
  teacher_state = saved_run(tiny_vit(tiny_config("simclr")), teacher_dir)
  before = sorted((p, os.path.getmtime(p)) for p in map(str, teacher_dir.rglob("*")))
  s = setup_lib.build(vqkd_config(str(teacher_dir)), devices=devices[:1])
  state = jax.device_get(s.init_fn(jax.random.key(0)))
  jax.tree.map(
    np.testing.assert_array_equal,
    state.method_state["teacher"]["params"],
    teacher_state.params["backbone"],
  )
  assert sorted((p, os.path.getmtime(p)) for p in map(str, teacher_dir.rglob("*"))) == before
  # decoder_out_dim 0: the decoder predicts the teacher's 16-d features.
  assert state.params["decode_proj"]["fc2"]["kernel"].shape[-1] == 16


def test_missing_or_mismatched_teacher_fails_naming_the_fix(tmp_path, devices):
  build = lambda c: setup_lib.build(c, devices=devices[:1])
  with pytest.raises(ValueError, match="VQ-KD needs a teacher run"):
    c = vqkd_config()
    c.vqkd.random_teacher = False
    build(c)
  with pytest.raises(FileNotFoundError, match="config.json does not exist"):
    build(vqkd_config(str(tmp_path / "nothing")))
  assert not (tmp_path / "nothing").exists()  # read-only: nothing created
  resnet = tmp_path / "resnet"
  workdir_lib.write_config(str(resnet), tiny_config("simclr"))
  with pytest.raises(ValueError, match="trained a 'resnet' backbone"):
    build(vqkd_config(str(resnet)))
  vit8 = tiny_vit(tiny_config("simclr"))
  vit8.model.patch_size = 8
  workdir_lib.write_config(str(tmp_path / "vit8"), vit8)
  with pytest.raises(ValueError, match="set --config.model.patch_size=8"):
    build(vqkd_config(str(tmp_path / "vit8")))
  workdir_lib.write_config(str(tmp_path / "untrained"), tiny_vit(tiny_config("simclr")))
  with pytest.raises(FileNotFoundError, match="has no checkpoint"):
    build(vqkd_config(str(tmp_path / "untrained")))
  c = vqkd_config(str(tmp_path / "untrained"))
  c.vqkd.decoder_out_dim = 32
  with pytest.raises(ValueError, match="set --config.vqkd.decoder_out_dim=16"):
    build(c)


def test_teacher_weights_teacher_needs_an_ema_teacher(tmp_path, devices):
  saved_run(tiny_vit(tiny_config("simclr")), tmp_path / "teacher")
  c = vqkd_config(str(tmp_path / "teacher"))
  c.vqkd.teacher_weights = "teacher"
  with pytest.raises(ValueError, match="has no EMA teacher; set --config.vqkd.teacher_weights"):
    setup_lib.build(c, devices=devices[:1])


def test_views_are_crops_without_colour(devices):
  (view,) = setup_lib.build(vqkd_config(), devices=devices[:1]).method.views()
  assert (view.jitter_prob, view.grayscale_prob, view.blur_prob, view.solarize_prob) == (0,) * 4


def test_codes_of_the_global_batch_do_not_depend_on_sharding(devices):
  """The tokenizer's codes (BEiT's targets) of a sharded batch equal the unsharded ones."""
  c = vqkd_config()
  c.vqkd.kmeans_init = False
  method, params, ms = _method_and_state(c, devices)
  net = VQKDNetwork(backbone=method.network().backbone, code_dim=4)
  params = {k: params[k] for k in ("backbone", "quant_proj")}
  images = _images(3)
  fn = jax.jit(lambda p, cb, x: tokenizer_codes(net, p, cb, x))
  sharded = jax.device_put(images, sharding.batch_sharding(sharding.make_mesh({"data": -1})))
  codebook = ms["codebook"]
  np.testing.assert_array_equal(fn(params, codebook, sharded), fn(params, codebook, images))
