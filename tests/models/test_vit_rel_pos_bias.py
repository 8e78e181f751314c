"""BEiT's shared relative position bias in the ViT (beit2/modeling_finetune.py
RelativePositionBias, Attention): the bias equals the reference's index construction, enters
the attention logits of every block, works scanned and rematerialised, sits in the last
layer-decay group, and is absent (no params, same functions) when off."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from testkit.configs import tiny_config

from sslax import config as config_lib
from sslax import models
from sslax.models import vit


def np_reference_bias(flat_table, grid_h, grid_w):
  """The reference's relative_position_index and gather, in NumPy: flat_table
  [(2h - 1)(2w - 1) + 3, heads] -> [heads, 1 + hw, 1 + hw]."""
  num = (2 * grid_h - 1) * (2 * grid_w - 1) + 3
  coords = np.stack(np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")).reshape(2, -1)
  rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
  rel[:, :, 0] += grid_h - 1
  rel[:, :, 1] += grid_w - 1
  rel[:, :, 0] *= 2 * grid_w - 1
  n = grid_h * grid_w + 1
  index = np.zeros((n, n), np.int64)
  index[1:, 1:] = rel.sum(-1)
  index[0, 0:] = num - 3
  index[0:, 0] = num - 2
  index[0, 0] = num - 1
  return flat_table[index.reshape(-1)].reshape(n, n, -1).transpose(2, 0, 1)


def _beit_vit(**kw):
  args = (
    dict(width=16, depth=2, num_heads=2, patch_size=4, posemb="none", rel_pos_bias="shared") | kw
  )
  return vit.ViT(**args)


def test_bias_is_the_references_relative_position_index():
  h, w, heads = 3, 4, 2
  module = vit.RelativePositionBias(heads)
  rng = np.random.default_rng(0)
  table = rng.normal(size=(2 * h - 1, 2 * w - 1, heads)).astype(np.float32)
  cls = rng.normal(size=(3, heads)).astype(np.float32)
  got = module.apply({"params": {"table": table, "cls": cls}}, h, w)
  flat = np.concatenate([table.reshape(-1, heads), cls])  # the reference's row order
  np.testing.assert_array_equal(got[0], np_reference_bias(flat, h, w))
  no_cls = vit.RelativePositionBias(heads, class_token=False).apply(
    {"params": {"table": table}}, h, w
  )
  np.testing.assert_array_equal(no_cls[0], np_reference_bias(flat, h, w)[:, 1:, 1:])


def test_attention_adds_the_bias_to_the_logits():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
  bias = jnp.asarray(rng.normal(size=(1, 2, 5, 5)), jnp.float32)
  attn = vit.Attention(2)
  params = attn.init(jax.random.key(0), x)["params"]
  got = attn.apply({"params": params}, x, bias)
  dense = lambda name, y: (
    np.einsum("btd,dnh->btnh", y, params[name]["kernel"]) + params[name]["bias"]
  )
  q, k, v = (dense(n, np.asarray(x)) for n in ("query", "key", "value"))
  logits = np.einsum("bqnh,bknh->bnqk", q, k) / np.sqrt(4) + np.asarray(bias)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  y = np.einsum("bnqk,bknh->bqnh", p, v)
  out = np.einsum("bqnh,nhd->bqd", y, params["out"]["kernel"]) + params["out"]["bias"]
  np.testing.assert_allclose(got, out, rtol=1e-5, atol=1e-5)


def test_the_shared_table_reaches_every_block_and_trains():
  x = jax.random.normal(jax.random.key(0), (2, 12, 12, 3))
  model = _beit_vit()
  variables = model.init(jax.random.key(1), x, train=False)
  params = variables["params"]
  assert "pos_embedding" not in params and "cls_pos_embedding" not in params
  assert params["rel_pos_bias"]["table"].shape == (5, 5, 2)
  assert not np.any(params["rel_pos_bias"]["table"])  # zero init, as the reference
  # A nonzero table changes the output (it is used), and gets a gradient.
  bumped = jax.tree.map(lambda a: a, params)
  bumped["rel_pos_bias"] = {"table": jnp.ones((5, 5, 2)) * jnp.arange(2.0), "cls": jnp.ones((3, 2))}
  f = jax.jit(lambda p: model.apply({"params": p}, x, train=False))
  assert np.abs(np.asarray(f(bumped)) - np.asarray(f(params))).max() > 1e-4
  grads = jax.jit(jax.grad(lambda p: jnp.sum(f(p) ** 2)))(bumped)
  assert np.abs(np.asarray(grads["rel_pos_bias"]["table"])).max() > 0


def test_scanned_and_rematerialised_equal_block_by_block():
  x = jax.random.normal(jax.random.key(0), (2, 12, 12, 3))
  plain, scanned = _beit_vit(), _beit_vit(scan=True, remat_policy="full")
  params = plain.init(jax.random.key(1), x, train=False)["params"]
  params["rel_pos_bias"]["table"] = jax.random.normal(jax.random.key(2), (5, 5, 2))
  blocks = [params["encoder"][f"block{i}"] for i in range(2)]
  stacked = dict(params, encoder={"blocks": jax.tree.map(lambda *a: jnp.stack(a), *blocks)})
  a = jax.jit(lambda p: plain.apply({"params": p}, x, train=False))(params)
  b = jax.jit(lambda p: scanned.apply({"params": p}, x, train=False))(stacked)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_rel_pos_bias_is_in_the_last_layer_decay_group():
  x = jnp.zeros((1, 12, 12, 3))
  params = _beit_vit().init(jax.random.key(0), x, train=False)["params"]
  ids, last = vit.layer_ids(params)
  assert last == 3
  assert ids["rel_pos_bias"]["table"] == last and ids["rel_pos_bias"]["cls"] == last


def test_off_builds_no_params_and_old_configs_read_as_off():
  model = config_lib.base_config().model
  assert model.rel_pos_bias == "none"
  old = {k: v for k, v in model.to_dict().items() if k != "rel_pos_bias"} | {"name": "vit"}
  backbone = models.make_backbone(ml_collections.ConfigDict(old))
  assert backbone.rel_pos_bias == "none"
  shapes = jax.eval_shape(
    lambda: vit.ViT(width=16, depth=1, num_heads=2, patch_size=4).init(
      jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False
    )
  )
  assert "rel_pos_bias" not in shapes["params"]


def test_errors_name_the_fix():
  x = jnp.zeros((1, 12, 12, 3))
  with pytest.raises(ValueError, match="posemb='none' leaves the tokens without any position"):
    vit.ViT(width=16, depth=1, num_heads=2, patch_size=4, posemb="none").init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="no offsets for register tokens"):
    _beit_vit(num_registers=2).init(jax.random.key(0), x)
  model = _beit_vit()
  variables = model.init(jax.random.key(0), x, train=False)
  with pytest.raises(ValueError, match="made for a 3x3 patch grid; this input has 4x4"):
    model.apply(variables, jnp.zeros((1, 16, 16, 3)), train=False)
  with pytest.raises(ValueError, match="keep_ids .* does not combine with rel_pos_bias"):
    model.apply(variables, x, train=False, keep_ids=jnp.zeros((1, 4), jnp.int32))
  c = tiny_config()
  c.model.name, c.model.variant, c.model.hidden_size = "vit", "custom", 16
  c.model.num_layers, c.model.num_heads, c.model.patch_size = 1, 2, 4
  c.model.posemb = "none"
  with pytest.raises(ValueError, match="config.model.posemb='none' leaves the ViT without"):
    config_lib.validate(c)
  c.model.rel_pos_bias = "per_layer"
  with pytest.raises(ValueError, match=r"config.model.rel_pos_bias='per_layer'; choose one of"):
    config_lib.validate(c)
