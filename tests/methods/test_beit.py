"""BEiT as a method: the masked-token cross-entropy counts masked patches only (NumPy), the
loss equals NumPy on the network's and tokenizer's own outputs, 8 devices == 1, the tokenizer
is read read-only from a VQ-KD run and its identity recorded, a missing or mismatched
tokenizer fails naming the fix, and teacher -> tokenizer -> BEiT trains end to end."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_vqkd import saved_run, tiny_vit, vqkd_config
from testkit.configs import tiny_config
from testkit.steps import (
  assert_trees_close,
  check_loss_eight_devices_equal_one,
  max_abs_change,
  run_steps,
)

from sslax import checkpoint, sharding, train
from sslax import setup as setup_lib
from sslax import workdir as workdir_lib
from sslax.losses import beit as beit_losses
from sslax.methods import beit as beit_lib
from sslax.methods import vqkd as vqkd_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def beit_config(tokenizer_workdir=""):
  c = tiny_vit(tiny_config("beit"), mask_token=True)  # 16 px, patch 4: 16 patches
  c.model.posemb, c.model.rel_pos_bias, c.model.layerscale_init = "none", "shared", 0.1
  c.beit.update(
    tokenizer_workdir=tokenizer_workdir,
    random_tokenizer=not tokenizer_workdir,
    codebook_size=16,
    codebook_dim=4,
    num_mask_patches=6,
    min_mask_patches_per_block=2,
  )
  return c


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _images(seed=0, n=16):
  rng = np.random.default_rng(seed)
  colour = rng.uniform(0.1, 0.7, size=(n, 1, 1, 3))
  return (colour + 0.3 * rng.uniform(size=(n, 16, 16, 3))).astype(np.float32)


def test_masked_cross_entropy_counts_masked_patches_only():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, size=(4, 5))
  valid = rng.random((4, 5)) < 0.6
  loss, acc = beit_losses.masked_token_cross_entropy(
    jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(valid)
  )
  ce = -np.take_along_axis(_np_log_softmax(logits), targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(loss, ce[valid].mean(), rtol=1e-5)
  np.testing.assert_allclose(acc, (logits.argmax(-1) == targets)[valid].mean(), rtol=1e-6)
  # Whatever the logits and targets of the other entries, the loss is the same.
  noise = np.where(valid[..., None], 0.0, 100 * rng.normal(size=logits.shape)).astype(np.float32)
  other = beit_losses.masked_token_cross_entropy(
    jnp.asarray(logits + noise), jnp.asarray(np.where(valid, targets, 0)), jnp.asarray(valid)
  )
  np.testing.assert_allclose(other[0], loss, rtol=1e-6)


def test_masked_cross_entropy_eight_devices_equal_one(devices):
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(16, 3, 7)).astype(np.float32)
  # Targets and masks as floats so that they shard like the logits (no gradient flows to them).
  targets = rng.integers(0, 7, size=(16, 3)).astype(np.float32)
  valid = (rng.random((16, 3)) < 0.7).astype(np.float32)

  def loss(logits, targets, valid, axis_name):
    t, v = targets.astype(jnp.int32), valid > 0.5
    return beit_losses.masked_token_cross_entropy(logits, t, v, axis_name=axis_name)[0]

  check_loss_eight_devices_equal_one(loss, [logits, targets, valid], devices, rtol=1e-5, atol=1e-6)


def test_masked_patch_ids_list_each_rows_masked_patches():
  masks = np.zeros((3, 8), bool)
  masks[0, [1, 4, 5]] = True
  masks[2, [0, 7]] = True
  ids, valid = beit_losses.masked_patch_ids(jnp.asarray(masks), 4)
  np.testing.assert_array_equal(ids, [[1, 4, 5, 0], [0, 0, 0, 0], [0, 7, 0, 0]])
  np.testing.assert_array_equal(valid, [[1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0]])


def _method_and_state(config, devices):
  method = setup_lib.build_method(config, sharding.make_mesh({"data": -1}, devices[:1]))
  variables = method.network().init(jax.random.key(0), jnp.zeros((2, 16, 16, 3)), train=False)
  return method, variables["params"], method.init_state(jax.random.key(1), variables)


def test_loss_equals_numpy_on_the_networks_and_tokenizers_outputs(devices):
  """Cross-entropy of the ViT's predictions (masked image) against the tokenizer's nearest
  code (whole image), over exactly the masked patches."""
  method, params, ms = _method_and_state(beit_config(), devices)
  images, key = _images(), jax.random.key(5)
  loss, (metrics, _, _) = jax.jit(lambda p, ms, b, k: method.loss(p, {}, ms, b, k))(
    params, ms, {"views": (images,), "label": np.zeros(16, np.int32)}, key
  )
  mask_rng, drop_rng = jax.random.split(key)
  masks = np.asarray(jax.jit(lambda k: method.sample_masks(k, 16))(mask_rng))
  assert np.all(masks.sum(1) <= 6) and masks.sum() >= 0.8 * 16 * 6  # 6 of 16 per image
  np.testing.assert_allclose(metrics["masked_ratio"], masks.mean(), rtol=1e-6)
  logits, _ = method.network().apply(
    {"params": params}, images, train=True, masks=jnp.asarray(masks), rngs={"dropout": drop_rng}
  )
  tok = ms["tokenizer"]
  z, _ = method.tokenizer_network().apply(
    {"params": tok["params"]}, images, train=False, method=vqkd_lib.VQKDNetwork.encode
  )
  z = np.asarray(z, np.float64)
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  codebook = np.asarray(tok["codebook"], np.float64)
  codes = (((z[..., None, :] - codebook) ** 2).sum(-1)).argmin(-1)  # [B, N]
  ce = -np.take_along_axis(_np_log_softmax(np.asarray(logits, np.float64)), codes[..., None], -1)
  np.testing.assert_allclose(loss, ce[..., 0][masks].mean(), rtol=1e-4)
  acc = (np.asarray(logits).argmax(-1) == codes)[masks].mean()
  np.testing.assert_allclose(metrics["mlm_acc"], acc, rtol=1e-5)


@pytest.mark.slow  # ~40 s on 2 loaded cores: two compiles of the whole step
def test_train_step_eight_devices_equal_one(devices):
  c = beit_config()
  batches = [{"views": (_images(i),), "label": np.zeros(16, np.int32)} for i in range(2)]
  init, s1, m1 = run_steps(c, devices[:1], batches)
  _, s8, m8 = run_steps(c, devices, batches)
  for key in m1:
    np.testing.assert_allclose(m8[key], m1[key], rtol=1e-4, atol=1e-6, err_msg=key)
  assert_trees_close(s8.params, s1.params, rtol=1e-4, atol=1e-5)
  assert max_abs_change(s1.params, init.params) > 1e-4
  assert np.abs(s1.params["backbone"]["mask_token"]).max() > 0  # the mask token trains


def _tokenizer_run(path):
  c = vqkd_config()
  c.vqkd.kmeans_init = False
  return saved_run(c, path), c


def _files(path):
  return sorted((str(p), os.path.getmtime(p)) for p in path.rglob("*"))


def _beit_config_file(arg):
  spec = importlib.util.spec_from_file_location(
    "beit_cfg", os.path.join(REPO, "configs", "beit_vit_fashion_mnist.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_tokenizer_is_read_read_only_and_its_identity_recorded(tmp_path, devices):
  tok_dir = tmp_path / "tokenizer"
  tok_state, _ = _tokenizer_run(tok_dir)
  before = _files(tok_dir)
  s = setup_lib.build(beit_config(str(tok_dir)), devices=devices[:1])
  ms = jax.device_get(s.init_fn(jax.random.key(0)).method_state)
  for part in ("backbone", "quant_proj"):
    jax.tree.map(
      np.testing.assert_array_equal, ms["tokenizer"]["params"][part], tok_state.params[part]
    )
  np.testing.assert_array_equal(ms["tokenizer"]["codebook"], tok_state.method_state["codebook"])
  sha = vqkd_lib.config_sha256(json.loads((tok_dir / "config.json").read_text()))
  assert beit_lib.identity_of(ms) == {"step": 5, "config_sha256": sha}
  assert _files(tok_dir) == before  # nothing written into the tokenizer's run
  # The config file pins the same identity in the BEiT run's config.
  pinned = _beit_config_file(str(tok_dir)).beit
  assert (pinned.tokenizer_step, pinned.tokenizer_config_sha256) == (5, sha)
  assert (pinned.codebook_size, pinned.codebook_dim) == (16, 4)


def test_missing_tokenizer_fails_naming_the_fix(tmp_path, devices):
  build = lambda c: setup_lib.build(c, devices=devices[:1])
  c = beit_config()
  c.beit.random_tokenizer = False
  with pytest.raises(ValueError, match="BEiT needs a VQ-KD tokenizer run: --config configs/beit"):
    build(c)
  with pytest.raises(FileNotFoundError, match="config.json does not exist"):
    build(beit_config(str(tmp_path / "nothing")))
  assert not (tmp_path / "nothing").exists()
  workdir_lib.write_config(str(tmp_path / "untrained"), vqkd_config())
  with pytest.raises(FileNotFoundError, match="has no checkpoint in .*train that run"):
    build(beit_config(str(tmp_path / "untrained")))
  _tokenizer_run(tmp_path / "tok")
  c = beit_config(str(tmp_path / "tok"))
  c.beit.tokenizer_step = 7
  with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 7; it has \[5\]"):
    build(c)


def _mismatch(c, what):
  if what == "method":
    return tiny_vit(tiny_config("simclr")), "is a 'simclr' run, not a VQ-KD tokenizer"
  if what == "image_size":
    c.dataset.image_size = 32
    return c, "set --config.dataset.image_size=32"
  if what == "patch_size":
    c.model.patch_size = 8
    return c, "set --config.model.patch_size=8"
  c.vqkd.num_codes = 32
  return c, "set --config.beit.codebook_size=32"


@pytest.mark.parametrize("what", ["method", "image_size", "patch_size", "codebook"])
def test_mismatched_tokenizer_fails_naming_the_fix(what, tmp_path, devices):
  tokenizer, message = _mismatch(vqkd_config(), what)
  workdir_lib.write_config(str(tmp_path / "tok"), tokenizer)
  with pytest.raises(ValueError, match=message):
    setup_lib.build(beit_config(str(tmp_path / "tok")), devices=devices[:1])


def test_a_changed_tokenizer_config_fails_against_the_pinned_hash(tmp_path, devices):
  workdir_lib.write_config(str(tmp_path / "tok"), vqkd_config())
  c = beit_config(str(tmp_path / "tok"))
  c.beit.tokenizer_config_sha256 = "0" * 64
  with pytest.raises(ValueError, match="hashes to .* not the pinned"):
    setup_lib.build(c, devices=devices[:1])


def test_bad_configs_name_the_fix(devices):
  mesh = sharding.make_mesh({"data": -1}, devices[:1])
  c = beit_config()
  c.model.mask_token = False
  with pytest.raises(ValueError, match="set --config.model.mask_token=True"):
    setup_lib.build_method(c, mesh)
  c = beit_config()
  c.beit.num_mask_patches = 17
  with pytest.raises(ValueError, match=r"num_mask_patches=17 must be in \(0, 16\]"):
    setup_lib.build_method(c, mesh)


@pytest.mark.slow  # three short training runs (~70 s on 2 loaded cores)
def test_teacher_then_tokenizer_then_beit_train_end_to_end(tmp_path, devices):
  teacher = tiny_vit(tiny_config("simclr"))
  teacher.total_steps = 2
  train.train(teacher, str(tmp_path / "teacher"))
  tok = vqkd_config(str(tmp_path / "teacher"))
  tok.total_steps = 3
  tok.vqkd.dead_code_threshold = 1.0
  out = train.train(tok, str(tmp_path / "tok"))
  assert np.isfinite(out["metrics"]["rec_loss"]) and 0 < out["metrics"]["codebook_usage"] <= 1
  c = beit_config(str(tmp_path / "tok"))
  c.total_steps = 2
  out = train.train(c, str(tmp_path / "beit"))
  assert np.isfinite(out["metrics"]["loss"])
  tree, _ = checkpoint.load_numpy(str(tmp_path / "beit"))
  identity = vqkd_lib.run_identity(str(tmp_path / "tok"))
  assert beit_lib.identity_of(tree["method_state"]) == {
    "step": identity["step"],
    "config_sha256": identity["config_sha256"],
  }
  tok_tree, _ = checkpoint.load_numpy(str(tmp_path / "tok"))
  np.testing.assert_array_equal(
    tree["method_state"]["tokenizer"]["codebook"], tok_tree["method_state"]["codebook"]
  )
