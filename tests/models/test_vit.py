"""ViT backbone: shapes, position embeddings, masking input, remat/scan/bf16, config checks, export."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from testkit.configs import tiny_config
from sslax import config as config_lib, export, models
from sslax.models import vit


def _images(n=2, size=16, channels=3, seed=0):
  return jnp.asarray(
    np.random.default_rng(seed).normal(size=(n, size, size, channels)), jnp.float32
  )


def _tiny(**kw):
  return vit.ViT(**dict(dict(width=32, depth=2, num_heads=2, patch_size=4), **kw))


def sincos_numpy(gh, gw, dim):
  """MAE's get_2d_sincos_pos_embed written out: emb_h (rows) then emb_w (cols), [sin, cos]."""
  out = np.zeros((gh * gw, dim))
  q = dim // 4
  for i in range(gh):
    for j in range(gw):
      for k in range(q):
        w = 1.0 / 10000 ** (k / q)
        out[i * gw + j, k] = np.sin(i * w)
        out[i * gw + j, q + k] = np.cos(i * w)
        out[i * gw + j, 2 * q + k] = np.sin(j * w)
        out[i * gw + j, 3 * q + k] = np.cos(j * w)
  return out


def test_variants_and_overrides():
  assert vit.vit_dims("Ti") == (192, 12, 3)
  assert vit.vit_dims("S") == (384, 12, 6)
  assert vit.vit_dims("B") == (768, 12, 12)
  assert vit.vit_dims("L") == (1024, 24, 16)
  assert vit.vit_dims("S", num_layers=4) == (384, 4, 6)
  assert vit.vit_dims("custom", 64, 3, 4) == (64, 3, 4)
  with pytest.raises(ValueError, match="Unknown ViT variant 'XL'"):
    vit.vit_dims("XL")
  with pytest.raises(ValueError, match="needs model.hidden_size"):
    vit.vit_dims("custom", 64)
  with pytest.raises(ValueError, match="not divisible by num_heads=5"):
    vit.vit_dims("custom", 64, 2, 5)


def test_features_shapes_and_param_names():
  m = _tiny()
  variables = m.init(jax.random.key(0), _images(), train=False)
  assert set(variables) == {"params"}
  params = variables["params"]
  assert {"patch_embed", "pos_embedding", "cls_token", "encoder", "encoder_norm"} <= set(params)
  assert params["pos_embedding"].shape == (1, 4, 4, 32)  # native grid of 16 px / 4
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  out = m.apply(variables, _images(), train=False)
  assert out.shape == (2, 32) and out.dtype == jnp.float32
  # gap pooling = mean of the final-norm patch tokens; cls = token 0.
  tokens = m.apply(variables, _images(), train=False, return_tokens=True)
  assert tokens.shape == (2, 17, 32)
  np.testing.assert_allclose(out, tokens[:, 0], rtol=1e-6)
  gap = _tiny(pool="gap").apply(variables, _images(), train=False)
  np.testing.assert_allclose(gap, tokens[:, 1:].mean(1), rtol=1e-5, atol=1e-6)


def test_sincos_matches_the_formula_and_is_used():
  np.testing.assert_allclose(vit.sincos_2d(3, 5, 16), sincos_numpy(3, 5, 16), atol=1e-6)
  m = _tiny(posemb="sincos2d")
  variables = m.init(jax.random.key(0), _images(), train=False)
  assert "pos_embedding" not in variables["params"]
  np.testing.assert_allclose(
    m.apply(variables, 4, 4, method=m.position_embeddings)[0], sincos_numpy(4, 4, 32), atol=1e-6
  )


def test_learned_posemb_is_exact_at_native_size_and_resized_elsewhere():
  m = _tiny()
  variables = m.init(jax.random.key(0), _images(), train=False)
  table = np.asarray(variables["params"]["pos_embedding"])
  native = m.apply(variables, 4, 4, method=m.position_embeddings)
  np.testing.assert_array_equal(native, table.reshape(1, 16, 32))  # bit-exact
  bigger = m.apply(variables, 8, 8, method=m.position_embeddings)
  assert bigger.shape == (1, 64, 32)
  # A 2x bilinear upsampling (half-pixel centres) keeps the mean of each channel and the
  # corner value's neighbourhood: check one interior value by hand. Output (1,1) sits at input
  # coordinate 0.25 in y and x: 0.75*0.75 t[0,0] + 0.75*0.25 (t[0,1] + t[1,0]) + 0.0625 t[1,1].
  t = table[0]
  expected = 0.5625 * t[0, 0] + 0.1875 * (t[0, 1] + t[1, 0]) + 0.0625 * t[1, 1]
  np.testing.assert_allclose(bigger[0, 1 * 8 + 1], expected, rtol=1e-5, atol=1e-6)
  # The model runs on 32 px images with the 16 px params.
  assert m.apply(variables, _images(size=32), train=False).shape == (2, 32)


def test_class_token_position_embedding_follows_each_reference():
  """learn: the class token has its own learned [1, 1, D] position (the first row of timm's /
  DINO's / open_clip's (1 + N)-row table), never resized; sincos2d: none (MAE's and MoCo v3's
  fixed zero row); cls_posemb=False drops it."""
  x = _images()
  m = _tiny()
  variables = m.init(jax.random.key(0), x, train=False)
  p = variables["params"]
  assert p["cls_pos_embedding"].shape == (1, 1, 32)
  assert float(jnp.std(p["cls_pos_embedding"])) > 0  # learned, randomly initialised
  # The class token entering the blocks is cls_token + cls_pos_embedding: the model with the
  # position folded into the token and cls_posemb=False gives the same tokens.
  folded = jax.tree.map(lambda a: a, p)
  folded["cls_token"] = p["cls_token"] + folded.pop("cls_pos_embedding")
  no_pos = _tiny(cls_posemb=False)
  assert "cls_pos_embedding" not in no_pos.init(jax.random.key(0), x, train=False)["params"]
  np.testing.assert_allclose(
    m.apply(variables, x, train=False, return_tokens=True),
    no_pos.apply({"params": folded}, x, train=False, return_tokens=True),
    rtol=1e-5,
    atol=1e-6,
  )
  # ... and it moves the output: dropping the position changes the class token's features.
  assert not np.allclose(
    m.apply(variables, x, train=False), no_pos.apply({"params": dict(p)}, x, train=False)
  )
  # Other image sizes resize the patch table only; the class token's row is kept as is.
  assert m.apply(variables, _images(size=32), train=False).shape == (2, 32)
  sincos = _tiny(posemb="sincos2d").init(jax.random.key(0), x, train=False)["params"]
  assert "cls_pos_embedding" not in sincos and "pos_embedding" not in sincos


def test_key_projection_is_a_dense_whose_bias_gets_no_gradient():
  """timm's qkv_bias=True key bias: DenseGeneral's params and output, a zero gradient (its
  true one: softmax ignores a per-row shift of the logits), so it stays at its zero init."""
  x = _images(size=8).reshape(2, 32, 6)
  key = vit.KeyProjection((2, 4))
  params = key.init(jax.random.key(3), x)["params"]
  dense = vit.nn.DenseGeneral((2, 4), kernel_init=vit.nn.initializers.xavier_uniform())
  ref = dense.init(jax.random.key(3), x)["params"]
  np.testing.assert_array_equal(params["kernel"], ref["kernel"])  # same init, same rng
  assert params["bias"].shape == (2, 4) and not np.any(params["bias"])
  params = dict(params, bias=jnp.arange(8.0).reshape(2, 4))
  np.testing.assert_allclose(
    key.apply({"params": params}, x), dense.apply({"params": params}, x), rtol=1e-6
  )
  m = _tiny()
  variables = m.init(jax.random.key(0), _images(), train=False)
  grads = jax.grad(lambda p: jnp.sum(m.apply({"params": p}, _images(), train=False) ** 3))(
    variables["params"]
  )
  attn = grads["encoder"]["block0"]["attn"]
  assert not np.any(attn["key"]["bias"]) and np.any(attn["query"]["bias"])
  assert np.any(attn["key"]["kernel"])


def test_keep_ids_encode_the_chosen_patches_with_their_positions():
  """Encoding patches [5, 2] equals encoding an image holding only those patches' tokens."""
  m = _tiny(depth=1)
  x = _images()
  variables = m.init(jax.random.key(0), x, train=False)
  keep = jnp.array([[5, 2], [0, 15]])
  tokens = m.apply(variables, x, train=False, keep_ids=keep, return_tokens=True)
  assert tokens.shape == (2, 3, 32)
  # Reference: patch embedding + posemb of all patches, gather, then the same blocks.
  p = variables["params"]
  patches = x.reshape(2, 4, 4, 4, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 16, 48)
  kernel = np.asarray(p["patch_embed"]["kernel"]).reshape(48, 32)
  embedded = patches @ kernel + p["patch_embed"]["bias"] + p["pos_embedding"].reshape(1, 16, 32)
  chosen = np.take_along_axis(np.asarray(embedded), np.asarray(keep)[:, :, None], axis=1)
  cls = p["cls_token"] + p["cls_pos_embedding"]  # the class token's own learned position
  seq = np.concatenate([np.broadcast_to(cls, (2, 1, 32)), chosen], axis=1)
  enc = vit.Encoder(1, 2, 128)
  ref = enc.apply({"params": p["encoder"]}, jnp.asarray(seq, jnp.float32))
  ref = vit.nn.LayerNorm(epsilon=1e-6).apply({"params": p["encoder_norm"]}, ref)
  np.testing.assert_allclose(tokens, ref, rtol=1e-4, atol=1e-5)


def test_remat_and_scan_give_the_same_outputs_and_grads():
  x = _images()
  base = _tiny()
  variables = base.init(jax.random.key(0), x, train=False)

  # A random readout: the squared norm of LayerNorm outputs would be constant (zero grads).
  readout = jnp.asarray(np.random.default_rng(1).normal(size=(32,)) / 6, jnp.float32)

  def loss(m, params):
    return jnp.sum(jnp.tanh(m.apply({"params": params}, x, train=True) @ readout))

  ref_l, ref_g = jax.value_and_grad(lambda p: loss(base, p))(variables["params"])
  for policy in ("dots_saveable",):
    l, g = jax.jit(jax.value_and_grad(lambda p: loss(_tiny(remat_policy=policy), p)))(
      variables["params"]
    )
    np.testing.assert_allclose(l, ref_l, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g, ref_g)
  # Scanned: the same blocks, params stacked on a leading [depth] axis.
  scanned = _tiny(scan=True)
  blocks = [variables["params"]["encoder"][f"block{i}"] for i in range(2)]
  stacked = dict(
    variables["params"], encoder={"blocks": jax.tree.map(lambda *a: jnp.stack(a), *blocks)}
  )
  assert jax.tree.structure(
    scanned.init(jax.random.key(0), x, train=False)["params"]
  ) == jax.tree.structure(stacked)
  np.testing.assert_allclose(loss(scanned, stacked), ref_l, rtol=1e-5)


@pytest.mark.slow  # two ViT-S compiles: ~30-50 s on 2 shared CPU cores
def test_vit_s_bfloat16_remat_forward_backward_equals_no_remat():
  """Acceptance: ViT-S (384 wide, 12 blocks, 6 heads), 16 px, patch 4, batch 2, bf16 + remat."""
  x = _images()
  readout = jnp.asarray(np.random.default_rng(1).normal(size=(384,)) / 20, jnp.float32)
  make = lambda policy: vit.ViT(
    *vit.vit_dims("S"), patch_size=4, dtype=jnp.bfloat16, remat_policy=policy, scan=True
  )
  params = make("none").init(jax.random.key(0), x, train=False)["params"]
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))

  def run(policy):
    m = make(policy)

    def fn(p):
      out = m.apply({"params": p}, x, train=True)
      return jnp.mean(jnp.tanh(out @ readout)), out

    (loss, out), grads = jax.jit(jax.value_and_grad(fn, has_aux=True))(params)
    return out, (loss, grads)

  out_remat, (loss_remat, g_remat) = run("full")
  out_plain, (loss_plain, g_plain) = run("none")
  assert out_remat.shape == (2, 384) and np.all(np.isfinite(out_remat))
  np.testing.assert_array_equal(out_remat, out_plain)
  np.testing.assert_allclose(loss_remat, loss_plain, rtol=1e-6)
  # Recomputed bf16 activations may fuse (and round) differently in the backward pass, so
  # gradients agree to bf16 rounding: compare the relative error of the whole gradient (single
  # leaves such as the key bias have a zero true gradient, i.e. pure rounding noise).
  flat = lambda g: np.concatenate([np.asarray(a, np.float64).ravel() for a in jax.tree.leaves(g)])
  a, b = flat(g_remat), flat(g_plain)
  assert np.linalg.norm(a - b) <= 2e-2 * np.linalg.norm(b)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_remat)) > 0


def test_drop_path_is_random_in_training_and_needs_an_rng():
  x = _images(n=16)
  # One block: rate linspace(0, 0.5, 1) = 0, so it is never dropped (and needs no rng).
  m1 = _tiny(drop_path_rate=0.5, depth=1)
  v1 = m1.init(jax.random.key(0), x, train=False)
  np.testing.assert_allclose(
    m1.apply(v1, x, train=True, rngs={"dropout": jax.random.key(1)}),
    m1.apply(v1, x, train=False),
    rtol=1e-5,
    atol=1e-6,
  )
  m = _tiny(drop_path_rate=0.5, depth=2)
  variables = m.init(jax.random.key(0), x, train=False)
  with pytest.raises(ValueError, match="dropout rng"):
    m.apply(variables, x, train=True)
  a = m.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
  b = m.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(a, b)
  # Eval mode ignores the rate.
  np.testing.assert_allclose(
    m.apply(variables, x, train=False), _tiny(depth=2).apply(variables, x, train=False), rtol=1e-6
  )


def _vit_config(**model):
  c = tiny_config()
  c.model.name = "vit"
  c.model.variant = "custom"
  c.model.hidden_size, c.model.num_layers, c.model.num_heads = 32, 2, 2
  c.model.patch_size = 4
  for k, v in model.items():
    c.model[k] = v
  return c


@pytest.mark.parametrize(
  "key,value,message",
  [
    ("variant", "XL", "Unknown ViT variant 'XL'"),
    ("patch_size", 5, r"patch_size=5; choose one of"),
    ("patch_size", 32, r"image_size=16 is not divisible by config.model.patch_size=32"),
    ("posemb", "rope", r"config.model.posemb='rope'; choose one of"),
    ("remat_policy", "most", r"config.model.remat_policy='most'"),
    ("num_heads", 3, "not divisible by num_heads=3"),
    ("drop_path_rate", 1.0, r"drop_path_rate=1.0 must be in"),
    ("attention", "flash", r"config.model.attention='flash'; choose one of \('xla', 'cudnn'\)"),
  ],
)
def test_config_errors_name_the_bad_value(key, value, message):
  c = _vit_config(**{key: value})
  with pytest.raises(ValueError, match=message):
    config_lib.validate(c)


def test_cls_pool_without_class_token_is_rejected():
  with pytest.raises(ValueError, match="pool='cls' needs config.model.class_token=True"):
    config_lib.validate(_vit_config(class_token=False))
  config_lib.validate(_vit_config(class_token=False, pool="gap"))


def _export_and_load(tmp_path, c, variables):
  """`c`'s encoder with `variables`, exported as a bundle (16 px, 1 channel) and loaded back."""
  spec = export.preprocessing_spec(16, 1)
  export.export_encoder(
    str(tmp_path),
    "bundle",
    model=c.model.to_dict(),
    dtype=c.dtype,
    variables=variables,
    preprocessing=spec,
  )
  return export.load_encoder(str(tmp_path))


def test_make_backbone_and_export_bundle_roundtrip(tmp_path):
  c = _vit_config()
  backbone = models.make_backbone(c.model, c.dtype)
  assert isinstance(backbone, vit.ViT) and backbone.width == 32 and backbone.depth == 2
  variables = backbone.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)), train=False)
  encoder = _export_and_load(tmp_path, c, variables)
  raw = np.random.default_rng(0).integers(0, 256, size=(3, 16, 16, 1), dtype=np.uint8)
  expected = backbone.apply(variables, jnp.asarray(raw, jnp.float32) / 255.0, train=False)
  assert encoder.feature_dim == 32
  np.testing.assert_allclose(encoder(raw), expected, rtol=1e-5, atol=1e-6)


def test_cudnn_attention_reaches_jax_and_exports_as_xla(tmp_path):
  """model.attention=cudnn is handed to jax.nn.dot_product_attention in the encoder and the MAE
  decoder (on a machine without cuDNN jax refuses it), and an encoder trained with it exports
  with XLA's attention, which runs anywhere and computes the same function."""
  c = _vit_config(attention="cudnn")
  c.dtype = "bfloat16"
  config_lib.validate(c)
  backbone = models.make_backbone(c.model, c.dtype)
  x = jnp.zeros((1, 16, 16, 1))
  plain = models.make_backbone(_vit_config().model, c.dtype)
  variables = plain.init(jax.random.key(0), x, train=False)
  on_gpu = any(d.platform == "gpu" for d in jax.devices())
  if not on_gpu:
    with pytest.raises(RuntimeError, match="cuDNN"):
      backbone.apply(variables, x, train=False)
  from sslax.models.mae_decoder import MAEDecoder

  decoder = MAEDecoder(width=16, depth=1, num_heads=2, attention="cudnn", dtype=jnp.bfloat16)
  latent, restore = jnp.zeros((1, 2, 16)), jnp.arange(4)[None]
  if not on_gpu:
    with pytest.raises(RuntimeError, match="cuDNN"):
      decoder.init(jax.random.key(0), latent, restore, (2, 2), 16)
  encoder = _export_and_load(tmp_path, c, variables)
  raw = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 1), dtype=np.uint8)
  expected = plain.apply(variables, jnp.asarray(raw, jnp.float32) / 255.0, train=False)
  np.testing.assert_allclose(encoder(raw), np.asarray(expected, np.float32), rtol=1e-2, atol=1e-2)
