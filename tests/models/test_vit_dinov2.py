"""DINOv2's ViT options (facebookresearch/dinov2, dinov2/models/vision_transformer.py and
dinov2/layers/): LayerScale, register tokens, the SwiGLU feed-forward and the mask token.

The reference numbers below were obtained by instantiating the reference itself: dinov2 at
commit b8931f7 (its `dinov2/models` and `dinov2/layers`, XFORMERS_DISABLED=1), torch 2.13 CPU,
`vision_transformer.vit_small / vit_base(patch_size=14, img_size=224, init_values=1e-5,
block_chunks=0, num_register_tokens=R, ffn_layer=F)`, counting `sum(p.numel() for p in
model.parameters())` and listing `model.state_dict()` shapes. The reference model always holds
its [1, D] mask token, so the sslax models are built with mask_token=True. Shapes only
(jax.eval_shape): the 12-block models are never initialised.
"""

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util
from scipy import special
from testkit.configs import tiny_config
from testkit.torch_twin import NO_JAX, random_variables, run_isolated, torchvision_stub_path

from sslax import config as config_lib
from sslax import export, export_timm, models
from sslax.models import vit

# (width, heads, registers, ffn) -> parameter count of the reference at 224 px (patch 14).
REFERENCE_COUNTS = {
  (384, 6, 0, "mlp"): 21_629_184,
  (384, 6, 4, "mlp"): 21_630_720,
  (768, 12, 0, "mlp"): 85_725_696,
  (768, 12, 4, "mlp"): 85_728_768,
  (384, 6, 0, "swiglu"): 21_635_328,  # ffn_layer="swiglufused"
  (768, 12, 0, "swiglu"): 85_737_984,
}

# The reference's state_dict of vit_small(patch_size=14, img_size=224, init_values=1e-5,
# num_register_tokens=4): everything outside the blocks, and block 0 (blocks 1-11 alike).
REFERENCE_S14_REG4 = {
  "cls_token": (1, 1, 384),
  "pos_embed": (1, 257, 384),
  "register_tokens": (1, 4, 384),
  "mask_token": (1, 384),
  "patch_embed.proj.weight": (384, 3, 14, 14),
  "patch_embed.proj.bias": (384,),
  "norm.weight": (384,),
  "norm.bias": (384,),
}
REFERENCE_S14_BLOCK = {
  "norm1.weight": (384,),
  "norm1.bias": (384,),
  "attn.qkv.weight": (1152, 384),
  "attn.qkv.bias": (1152,),
  "attn.proj.weight": (384, 384),
  "attn.proj.bias": (384,),
  "ls1.gamma": (384,),
  "norm2.weight": (384,),
  "norm2.bias": (384,),
  "mlp.fc1.weight": (1536, 384),
  "mlp.fc1.bias": (1536,),
  "mlp.fc2.weight": (384, 1536),
  "mlp.fc2.bias": (384,),
  "ls2.gamma": (384,),
}
# ffn_layer="swiglufused" (SwiGLUFFNFused without xFormers): the MLP entries become these.
REFERENCE_S14_SWIGLU = {
  "mlp.w12.weight": (2048, 384),
  "mlp.w12.bias": (2048,),
  "mlp.w3.weight": (384, 1024),
  "mlp.w3.bias": (384,),
}


def _dinov2(width, heads, **kw):
  kw = {"layerscale_init": 1e-5, "mask_token": True, **kw}
  return vit.ViT(width=width, depth=12, num_heads=heads, patch_size=14, **kw)


def _shapes(model, size=224):
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  return {
    k: tuple(v.shape) for k, v in traverse_util.flatten_dict(params["params"], sep="/").items()
  }


@pytest.mark.parametrize("width,heads,registers,ffn", sorted(REFERENCE_COUNTS))
def test_parameter_counts_are_the_reference_models(width, heads, registers, ffn):
  # Scanned blocks: one block traced, the same params stacked (the layout test checks both).
  shapes = _shapes(_dinov2(width, heads, num_registers=registers, ffn=ffn, scan=True))
  assert (
    sum(math.prod(s) for s in shapes.values()) == REFERENCE_COUNTS[width, heads, registers, ffn]
  )


def test_the_config_builds_dinov2_vit_s14_with_registers():
  c = tiny_config()
  c.dataset.image_size = 224
  c.model.update(
    name="vit", variant="S", patch_size=14, layerscale_init=1e-5, num_registers=4, mask_token=True
  )
  config_lib.validate(c)
  backbone = models.make_backbone(c.model, c.dtype)
  assert backbone.num_prefix_tokens == 5
  assert sum(math.prod(s) for s in _shapes(backbone).values()) == 21_630_720


def _expected_from_reference(reference: dict) -> dict:
  """The sslax param shapes that the reference's state_dict names map to (one row each)."""
  out = {}
  for name, shape in reference.items():
    dim = shape[-1]
    if name == "pos_embed":  # [1, 1 + N, D]: the class token's row, then the patch grid
      grid = math.isqrt(shape[1] - 1)
      out["cls_pos_embedding"], out["pos_embedding"] = (1, 1, dim), (1, grid, grid, dim)
    elif name == "mask_token":  # [1, D] there, [1, 1, D] here
      out["mask_token"] = (1, 1, dim)
    elif name in ("cls_token", "register_tokens"):
      out[name] = shape
    elif name == "patch_embed.proj.weight":  # OIHW -> HWIO
      out["patch_embed/kernel"] = (shape[2], shape[3], shape[1], shape[0])
    elif name == "patch_embed.proj.bias":
      out["patch_embed/bias"] = shape
    elif name.startswith("norm"):
      out[{"norm.weight": "encoder_norm/scale", "norm.bias": "encoder_norm/bias"}[name]] = shape
    else:
      raise AssertionError(f"unmapped reference name {name}")
  return out


def _expected_block(reference_block: dict, heads: int) -> dict:
  out = {}
  for name, shape in reference_block.items():
    module, leaf = name.rsplit(".", 1)
    if module in ("norm1", "norm2"):
      out[f"{module}/{'scale' if leaf == 'weight' else 'bias'}"] = shape
    elif module == "attn.qkv":  # fused [3D, D] -> query, key, value [D, heads, D / heads]
      dim = shape[0] // 3
      for part in ("query", "key", "value"):
        out[f"attn/{part}/{'kernel' if leaf == 'weight' else 'bias'}"] = (
          (dim, heads, dim // heads) if leaf == "weight" else (heads, dim // heads)
        )
    elif module == "attn.proj":
      dim = shape[0]
      out[f"attn/out/{'kernel' if leaf == 'weight' else 'bias'}"] = (
        (heads, dim // heads, dim) if leaf == "weight" else shape
      )
    elif module in ("ls1", "ls2"):
      out[f"{module}/gamma"] = shape
    else:  # mlp.fc1 / mlp.fc2 / mlp.w12 / mlp.w3: torch Linear [out, in] -> Dense [in, out]
      path = module.replace(".", "/")
      out[f"{path}/{'kernel' if leaf == 'weight' else 'bias'}"] = (
        shape[::-1] if leaf == "weight" else shape
      )
  return out


@pytest.mark.parametrize("ffn", ["mlp", "swiglu"])
def test_param_tree_matches_the_reference_module_by_module(ffn):
  block = dict(REFERENCE_S14_BLOCK)
  if ffn == "swiglu":
    block = {k: v for k, v in block.items() if not k.startswith("mlp.")} | REFERENCE_S14_SWIGLU
  expected = _expected_from_reference(REFERENCE_S14_REG4)
  per_block = _expected_block(block, 6)
  for i in range(12):
    expected |= {f"encoder/block{i}/{k}": v for k, v in per_block.items()}
  assert _shapes(_dinov2(384, 6, num_registers=4, ffn=ffn)) == expected
  # Scanned (and rematerialised) blocks: the same params stacked on a leading [12] axis.
  scanned = _shapes(
    _dinov2(384, 6, num_registers=4, ffn=ffn, scan=True, remat_policy="dots_saveable")
  )
  stacked = {k: v for k, v in expected.items() if not k.startswith("encoder/")}
  stacked |= {f"encoder/blocks/{k}": (12, *v) for k, v in per_block.items()}
  assert scanned == stacked


# ---- NumPy references (float64)


def _layer_norm(x, p):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def _attention(x, p):
  q, k, v = (
    np.einsum("btd,dnh->btnh", x, p[n]["kernel"]) + p[n]["bias"] for n in ("query", "key", "value")
  )
  logits = np.einsum("bqnh,bknh->bnqk", q, k) / np.sqrt(q.shape[-1])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  y = np.einsum("bnqk,bknh->bqnh", weights, v)
  return np.einsum("bqnh,nhd->bqd", y, p["out"]["kernel"]) + p["out"]["bias"]


def _ffn(x, p, ffn):
  if ffn == "mlp":  # exact GELU
    h = x @ p["fc1"]["kernel"] + p["fc1"]["bias"]
    return (0.5 * h * (1 + special.erf(h / np.sqrt(2)))) @ p["fc2"]["kernel"] + p["fc2"]["bias"]
  h = x @ p["w12"]["kernel"] + p["w12"]["bias"]
  half = h.shape[-1] // 2
  gate, value = h[..., :half], h[..., half:]  # the reference's x12.chunk(2): silu(x1) * x2
  return (gate / (1 + np.exp(-gate)) * value) @ p["w3"]["kernel"] + p["w3"]["bias"]


def _as64(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


@pytest.mark.parametrize("ffn", ["mlp", "swiglu"])
def test_layerscale_multiplies_each_residual_branch(ffn):
  """x + ls1 * attn(norm1(x)), then x + ls2 * ffn(norm2(x)), with per-channel gammas."""
  width, rng = 8, np.random.default_rng(0)
  x = rng.normal(size=(2, 5, width)).astype(np.float32)
  gamma = vit.LayerScale(1e-5).init(jax.random.key(0), x)["params"]["gamma"]
  np.testing.assert_array_equal(gamma, np.full(width, 1e-5, np.float32))  # the init value
  block = vit.EncoderBlock(num_heads=2, mlp_dim=24, layerscale_init=1e-5, ffn=ffn)
  # Non-trivial gains, kernels and biases, so each branch's scaling shows.
  shapes = jax.eval_shape(lambda: block.init(jax.random.key(0), x, 0.0))["params"]
  params = jax.tree_util.tree_map_with_path(
    lambda path, a: (
      rng.uniform(0.5, 2.0, a.shape)
      if path[-1].key in ("gamma", "scale")
      else rng.normal(0, 0.3 if path[-1].key == "bias" else 0.5, a.shape)
    ).astype(np.float32),
    shapes,
  )
  assert sorted(params) == ["attn", "ls1", "ls2", "mlp", "norm1", "norm2"]
  got, _ = jax.jit(lambda p, x: block.apply({"params": p}, x, 0.0))(params, x)
  p = _as64(params)
  h = np.asarray(x, np.float64)
  h = h + p["ls1"]["gamma"] * _attention(_layer_norm(h, p["norm1"]), p["attn"])
  h = h + p["ls2"]["gamma"] * _ffn(_layer_norm(h, p["norm2"]), p["mlp"], ffn)
  np.testing.assert_allclose(got, h, rtol=1e-5, atol=1e-5)


def test_swiglu_hidden_size_is_the_reference_rule():
  """SwiGLUFFNFused: hidden = int(2/3 of the MLP's), rounded up to a multiple of 8."""
  for mlp_dim in (1536, 3072, 4096, 6144, 100, 48, 8):
    third = int(mlp_dim * 2 / 3)
    assert vit.swiglu_hidden_size(mlp_dim) == -(-third // 8) * 8
  # ViT-S, -B, -L, -g: 1024, 2048, 2736, 4096 (the reference's comment for g: 4096).
  assert [vit.swiglu_hidden_size(4 * d) for d in (384, 768, 1024, 1536)] == [1024, 2048, 2736, 4096]
  # mlp_dim sets the MLP-equivalent size: 100 -> int(66.67) = 66 -> 72.
  shapes = _shapes(
    vit.ViT(width=16, depth=1, num_heads=2, patch_size=4, mlp_dim=100, ffn="swiglu"), 8
  )
  assert shapes["encoder/block0/mlp/w12/kernel"] == (16, 2 * 72)
  assert shapes["encoder/block0/mlp/w3/kernel"] == (72, 16)
  with pytest.raises(
    ValueError, match=r"Unknown ViT ffn 'geglu'; choose one of \('mlp', 'swiglu'\)"
  ):
    _shapes(vit.ViT(width=16, depth=1, num_heads=2, patch_size=4, ffn="geglu"), 8)


# ---- Token input: what enters the first block


def _tiny(**kw):
  return vit.ViT(**{"width": 16, "depth": 1, "num_heads": 2, "patch_size": 4, **kw})


def _images(n=2, size=16, seed=0):
  return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(np.float32)


def _block_input(model, variables, x, **arrays):
  """(the tokens the encoder receives: class token, registers, masked patches + positions;
  the output tokens). Traceable: call it inside jax.jit (one compile per test)."""
  seen = []

  def capture(next_fun, args, kwargs, context):
    if isinstance(context.module, vit.Encoder) and context.method_name == "__call__":
      seen.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(capture):
    out = model.apply(variables, x, train=False, return_tokens=True, **arrays)
  return seen[0], out


def _patch_embeddings(p, x, patch=4):
  """NumPy: the conv patch embedding as a matmul over row-major patches -> [B, N, D]."""
  b, h, _w, c = x.shape
  g = h // patch
  patches = x.reshape(b, g, patch, g, patch, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, -1)
  kernel = np.asarray(p["patch_embed"]["kernel"]).reshape(-1, p["patch_embed"]["kernel"].shape[-1])
  return patches @ kernel + np.asarray(p["patch_embed"]["bias"])


def test_registers_follow_the_class_token_without_position_embeddings():
  x = _images()
  m, gap_model = _tiny(num_registers=3), _tiny(num_registers=3, pool="gap")
  variables = random_variables(m, 16)
  p = variables["params"]
  assert p["register_tokens"].shape == (1, 3, 16) and m.num_prefix_tokens == 4

  def run(v, x):
    tokens_in, tokens = _block_input(m, v, x)
    return tokens_in, tokens, m.apply(v, x, train=False), gap_model.apply(v, x, train=False)

  tokens_in, tokens, cls_out, gap = map(np.asarray, jax.jit(run)(variables, x))
  pos = np.asarray(p["pos_embedding"]).reshape(1, 16, 16)
  cls = np.asarray(p["cls_token"] + p["cls_pos_embedding"])
  expected = np.concatenate(
    [
      np.broadcast_to(cls, (2, 1, 16)),
      np.broadcast_to(np.asarray(p["register_tokens"]), (2, 3, 16)),  # no position added
      _patch_embeddings(p, x) + pos,
    ],
    axis=1,
  )
  np.testing.assert_allclose(tokens_in, expected, rtol=1e-5, atol=1e-5)
  # Output: (class, registers, patches); the registers leave the patch tokens' count alone.
  assert tokens.shape == (2, 1 + 3 + 16, 16)
  assert tokens[:, m.num_prefix_tokens :].shape == (2, 16, 16)
  np.testing.assert_allclose(cls_out, tokens[:, 0], rtol=1e-6, atol=1e-6)
  # pool="gap" averages the patch tokens only, never the registers.
  np.testing.assert_allclose(gap, tokens[:, 4:].mean(1), rtol=1e-5, atol=1e-6)
  assert not np.allclose(gap, tokens[:, 1:].mean(1), atol=1e-4)
  # Without a class token the registers come first; MAE's keep_ids keep them too.
  no_cls = _tiny(num_registers=3, class_token=False, pool="gap")
  assert no_cls.num_prefix_tokens == 3
  v = jax.eval_shape(lambda: no_cls.init(jax.random.key(0), x, train=False))
  keep = jnp.array([[0, 5], [7, 2]])
  kept = jax.eval_shape(
    lambda v: no_cls.apply(v, x, train=False, keep_ids=keep, return_tokens=True), v
  )
  assert kept.shape == (2, 3 + 2, 16)


def test_masks_replace_exactly_the_masked_patch_embeddings():
  """DINOv2's prepare_tokens_with_masks: where(mask, mask_token, patch embedding), then the
  position embeddings (the masked patches keep theirs), then class token and registers."""
  x = _images()
  m, plain = _tiny(mask_token=True, num_registers=2), _tiny(num_registers=2)
  p = random_variables(m, 16)["params"]
  assert p["mask_token"].shape == (1, 1, 16)
  masks = np.random.default_rng(2).random((2, 16)) < 0.4
  assert 0 < masks.sum() < 32
  without = {k: v for k, v in p.items() if k != "mask_token"}

  def run(p, masks):
    v = {"params": p}
    return (
      _block_input(m, v, x, masks=masks)[0],
      _block_input(m, v, x)[0],
      _block_input(m, v, x, masks=jnp.zeros_like(masks))[0],
      m.apply(v, x, train=False),
      plain.apply({"params": without}, x, train=False),
    )

  masked, unmasked, none_set, out, plain_out = map(np.asarray, jax.jit(run)(p, masks))
  embedded = np.where(masks[:, :, None], np.asarray(p["mask_token"]), _patch_embeddings(p, x))
  embedded = embedded + np.asarray(p["pos_embedding"]).reshape(1, 16, 16)
  np.testing.assert_allclose(masked[:, 3:], embedded, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(masked[:, :3], unmasked[:, :3])  # prefix tokens untouched
  np.testing.assert_array_equal(masked[:, 3:][~masks], unmasked[:, 3:][~masks])
  # No mask set: the same as no masks; and the mask token changes nothing without masks.
  np.testing.assert_array_equal(none_set, unmasked)
  np.testing.assert_allclose(out, plain_out, rtol=1e-6, atol=1e-6)


def test_mask_errors_name_the_fix():
  x = _images()
  m = _tiny(mask_token=True)
  variables = jax.eval_shape(lambda: m.init(jax.random.key(0), x, train=False))
  shapes = lambda model, **kw: jax.eval_shape(
    lambda v: model.apply(v, x, train=False, **kw), variables
  )
  masks = jnp.zeros((2, 16), bool)
  assert shapes(m, masks=masks).shape == (2, 16)
  with pytest.raises(ValueError, match="needs the learned mask token.*mask_token=True"):
    shapes(_tiny(), masks=masks)
  with pytest.raises(ValueError, match="masks= .* or keep_ids= .*not both"):
    shapes(m, masks=masks, keep_ids=jnp.zeros((2, 4), jnp.int32))
  with pytest.raises(ValueError, match=r"masks must be bool \[B, N\] = \[2, 16\].*\[2, 4, 4\]"):
    shapes(m, masks=jnp.zeros((2, 4, 4), bool))
  with pytest.raises(ValueError, match="masks must be bool.*got int32"):
    shapes(m, masks=jnp.zeros((2, 16), jnp.int32))


def _all_options(**kw):
  return _tiny(depth=2, layerscale_init=0.1, num_registers=2, ffn="swiglu", mask_token=True, **kw)


def test_options_work_scanned_and_rematerialised():
  """The same loss scanned + rematerialised (params stacked on [depth]) as block by block, and
  the new params are trained."""
  x = _images()
  masks = jnp.asarray(np.random.default_rng(3).random((2, 16)) < 0.5)
  plain, scanned = _all_options(), _all_options(scan=True, remat_policy="full")
  params = random_variables(plain, 16)["params"]
  blocks = [params["encoder"][f"block{i}"] for i in range(2)]
  stacked = dict(params, encoder={"blocks": jax.tree.map(lambda *a: np.stack(a), *blocks)})
  readout = jnp.asarray(np.random.default_rng(4).normal(size=(16,)), jnp.float32)

  def loss(m, params):
    tokens = m.apply({"params": params}, x, train=True, masks=masks, return_tokens=True)
    return jnp.sum(jnp.tanh(tokens @ readout))

  run = lambda p, s: (loss(plain, p), jax.value_and_grad(lambda s: loss(scanned, s))(s))
  ref_l, (l, g) = jax.jit(run)(params, stacked)
  np.testing.assert_allclose(l, ref_l, rtol=1e-5)
  for leaf in (g["mask_token"], g["register_tokens"], g["encoder"]["blocks"]["ls2"]["gamma"]):
    assert np.all(np.isfinite(leaf)) and np.any(leaf)


def test_defaults_build_the_plain_vit():
  """Off, the options build no params: the plain ViT's tree, and make_backbone reads configs
  (and exported encoders' specs) written before the keys existed."""
  shapes = _shapes(_tiny(depth=1), 16)
  assert sorted(shapes) == sorted(
    ["patch_embed/kernel", "patch_embed/bias", "pos_embedding", "cls_token", "cls_pos_embedding"]
    + ["encoder_norm/scale", "encoder_norm/bias"]
    + [f"encoder/block0/norm{i}/{n}" for i in (1, 2) for n in ("scale", "bias")]
    + [
      f"encoder/block0/attn/{m}/{n}"
      for m in ("query", "key", "value", "out")
      for n in ("kernel", "bias")
    ]
    + [f"encoder/block0/mlp/fc{i}/{n}" for i in (1, 2) for n in ("kernel", "bias")]
  )
  model = config_lib.base_config().model
  assert (model.layerscale_init, model.num_registers, model.ffn, model.mask_token) == (
    0.0,
    0,
    "mlp",
    False,
  )
  old = {
    k: v
    for k, v in model.to_dict().items()
    if k not in ("layerscale_init", "num_registers", "ffn", "mask_token")
  }
  old.update(name="vit")
  backbone = models.make_backbone(ml_collections.ConfigDict(old))
  assert (backbone.layerscale_init, backbone.num_registers, backbone.ffn, backbone.mask_token) == (
    0.0,
    0,
    "mlp",
    False,
  )
  assert backbone.num_prefix_tokens == 1


@pytest.mark.parametrize(
  "key,value,message",
  [
    ("ffn", "swiglufused", r"config.model.ffn='swiglufused'; choose one of \('mlp', 'swiglu'\)"),
    ("num_registers", -1, r"config.model.num_registers=-1 must be an integer >= 0"),
    ("layerscale_init", -1e-5, r"config.model.layerscale_init=-1e-05 must be >= 0"),
  ],
)
def test_config_errors_name_the_bad_value(key, value, message):
  c = tiny_config()
  c.model.update(
    name="vit", variant="custom", hidden_size=16, num_layers=1, num_heads=2, patch_size=4
  )
  c.model[key] = value
  with pytest.raises(ValueError, match=message):
    config_lib.validate(c)


# ---- timm export

_EXPORT_CASES = {
  # learned positions (the class token's own row: timm's table gets zero register rows)
  "cls_swiglu": {"ffn": "swiglu", "layerscale_init": 1e-5, "num_registers": 3, "mask_token": True},
  # sin-cos, mean pooling, scanned blocks
  "sincos_gap_scan": {
    "posemb": "sincos2d",
    "pool": "gap",
    "scan": True,
    "layerscale_init": 0.1,
    "num_registers": 2,
  },
  # registers without a class token: timm's no_embed_class
  "nocls_gap": {"class_token": False, "pool": "gap", "num_registers": 2},
}

_RUN_TIMM = """
    import json
    import numpy as np
    import safetensors.torch
    import timm
    import torch

    cases = json.load(open(sys.argv[2]))
    out = {}
    for name, case in cases.items():
      cfg = json.load(open(case["dir"] + "/config.json"))
      model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"]).eval()
      model.load_state_dict(safetensors.torch.load_file(case["dir"] + "/model.safetensors"))
      with torch.no_grad():
        out[name] = model(torch.from_numpy(np.load(case["inputs"]))).numpy()
    np.savez(sys.argv[3], **out)
    """


def _export_model(**kw):
  model = tiny_config().model
  model.update(
    name="vit", variant="custom", hidden_size=32, num_layers=2, num_heads=2, patch_size=8
  )
  model.update(kw)
  return model


def test_export_round_trip_keeps_every_option():
  model = _export_model(**_EXPORT_CASES["cls_swiglu"])
  backbone = models.make_backbone(model)
  variables = random_variables(backbone, 32)
  spec, state = export_timm.to_timm(backbone, variables, 32, 3)
  assert spec.architecture == "vit_giant_patch14_dinov2"  # timm's registered SwiGLU ViT
  assert spec.model_args["init_values"] == 1e-5 and spec.model_args["reg_tokens"] == 3
  assert int(32 * spec.model_args["mlp_ratio"]) == 2 * vit.swiglu_hidden_size(128)
  assert state["reg_token"].shape == (1, 3, 32) and state["blocks.1.ls2.gamma"].shape == (32,)
  assert state["pos_embed"].shape == (1, 1 + 3 + 16, 32) and not np.any(state["pos_embed"][:, 1:4])
  assert not any("mask" in k for k in state)  # no timm counterpart; features never use it
  back = export_timm.from_timm(backbone, state, 32, 3)
  expected = jax.device_get(variables)
  expected["params"]["mask_token"] = np.zeros((1, 1, 32), np.float32)
  jax.tree.map(np.testing.assert_array_equal, back, expected)
  bad = dict(state, pos_embed=state["pos_embed"] + 1.0)
  with pytest.raises(ValueError, match="nonzero rows for the register tokens"):
    export_timm.from_timm(backbone, bad, 32, 3)


@pytest.mark.slow  # a torch + timm subprocess: ~20 s on 2 loaded cores
def test_timm_computes_the_sslax_features(tmp_path):
  cases = {}
  raw = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
  pre = export.preprocessing_spec(32, 3)
  x = np.asarray(export.preprocess(raw, pre))
  for name, kw in _EXPORT_CASES.items():
    model = _export_model(**kw)
    backbone = models.make_backbone(model)
    variables = random_variables(backbone, 32, seed=1)
    out = str(tmp_path / name)
    export.export_encoder(
      out, "timm", model=model.to_dict(), dtype="float32", variables=variables, preprocessing=pre
    )
    features = np.asarray(backbone.apply(variables, x, train=False))
    inputs = str(tmp_path / f"{name}.npy")
    np.save(inputs, x.transpose(0, 3, 1, 2))
    cases[name] = {"dir": out, "inputs": inputs, "features": features}
  spec_path, result = tmp_path / "cases.json", tmp_path / "timm.npz"
  spec_path.write_text(
    json.dumps({k: {"dir": c["dir"], "inputs": c["inputs"]} for k, c in cases.items()})
  )
  run_isolated(_RUN_TIMM, NO_JAX, spec_path, result, pythonpath=torchvision_stub_path(tmp_path))
  with np.load(result) as got:
    for name, case in cases.items():
      assert np.abs(case["features"]).max() > 0.1
      np.testing.assert_allclose(got[name], case["features"], rtol=0, atol=1e-4, err_msg=name)


def test_last_blocks_class_tokens_and_avgpool_are_dinos_eval_features():
  """n_last_blocks / avgpool: DINO eval_linear.py's get_intermediate_layers features."""
  model = vit.ViT(width=16, depth=3, num_heads=2, patch_size=4)
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  final = model.apply(variables, x, train=False)
  tokens = model.apply(variables, x, train=False, return_tokens=True)
  both = model.apply(variables, x, train=False, n_last_blocks=2, avgpool=True)
  assert both.shape == (2, 48)
  np.testing.assert_allclose(both[:, 16:32], final, rtol=1e-6)  # the last block's class token
  np.testing.assert_allclose(both[:, 32:], tokens[:, 1:].mean(1), rtol=1e-5, atol=1e-6)
  # The first 16 are block 1's class token through the same final LayerNorm: a 2-block ViT
  # with the same first two blocks' params gives it as its final class token.
  two = vit.ViT(width=16, depth=2, num_heads=2, patch_size=4)
  params = dict(variables["params"])
  params["encoder"] = {k: v for k, v in params["encoder"].items() if k != "block2"}
  np.testing.assert_allclose(
    both[:, :16], two.apply({"params": params}, x, train=False), rtol=1e-5, atol=1e-6
  )
  with pytest.raises(ValueError, match="unscanned"):
    scanned = vit.ViT(width=16, depth=3, num_heads=2, patch_size=4, scan=True)
    scanned.init(jax.random.key(0), x, train=False, n_last_blocks=2)
