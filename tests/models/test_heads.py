"""Heads against their references, module by module: each method's projector / predictor read
from the flax param tree (Linear widths and bias, BN placement and whether it learns a scale
and a shift) equals the layer list its reference code builds, transcribed here on its own; and
`ProjectionHead`'s forward equals a NumPy forward of that layer list (ReLU placement, BN in
train mode)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from testkit.configs import tiny_config

from sslax import setup as setup_lib
from sslax import sharding
from sslax.models import ProjectionHead

HIDDEN, OUT = 32, 16


# The references' heads as layer lists: ("linear", in, out, bias), ("bn", dim, scale, shift),
# ("relu",). Transcribed from each repository, not from sslax.


def moco_v3_mlp(num_layers, input_dim, mlp_dim, output_dim, last_bn=True):
  """facebookresearch/moco-v3 moco/builder.py `_build_mlp`: every nn.Linear(bias=False); hidden
  layers BatchNorm1d + ReLU; with last_bn a BatchNorm1d(affine=False) after the last Linear."""
  layers = []
  for i in range(num_layers):
    d1 = input_dim if i == 0 else mlp_dim
    d2 = output_dim if i == num_layers - 1 else mlp_dim
    layers.append(("linear", d1, d2, False))
    if i < num_layers - 1:
      layers += [("bn", d2, True, True), ("relu",)]
    elif last_bn:
      layers.append(("bn", d2, False, False))
  return layers


def simclr_projection_head(num_proj_layers, input_dim, mid_dim, out_dim):
  """google-research/simclr model_util.py / tf2 `projection_head` ('nonlinear'): each layer is
  `linear_layer(use_bn=True)`, whose Dense has no bias under BN and whose BN has a scale and
  centre=use_bias: middle layers use_bias=True + ReLU, the last use_bias=False (no centre).
  (The reference's mid_dim is the input width; here it is `simclr.proj_hidden_dim`.)"""
  layers, d = [], input_dim
  for j in range(num_proj_layers):
    last = j == num_proj_layers - 1
    width = out_dim if last else mid_dim
    layers += [("linear", d, width, False), ("bn", width, True, not last)]
    if not last:
      layers.append(("relu",))
    d = width
  return layers


def byol_mlp(input_dim, hidden_size, output_size):
  """google-deepmind/deepmind-research byol/utils/networks.py `MLP`: hk.Linear(with_bias=True),
  hk.BatchNorm (create_scale and create_offset, byol/configs/byol.py), relu,
  hk.Linear(with_bias=False)."""
  return [
    ("linear", input_dim, hidden_size, True),
    ("bn", hidden_size, True, True),
    ("relu",),
    ("linear", hidden_size, output_size, False),
  ]


def barlow_twins_projector(sizes):
  """facebookresearch/barlowtwins main.py: Linear(bias=False) + BatchNorm1d + ReLU per hidden
  layer, then Linear(bias=False) (the loss's affine-free BN is not part of the projector)."""
  layers = []
  for i in range(len(sizes) - 2):
    layers += [("linear", sizes[i], sizes[i + 1], False), ("bn", sizes[i + 1], True, True)]
    layers.append(("relu",))
  return layers + [("linear", sizes[-2], sizes[-1], False)]


def vicreg_projector(sizes):
  """facebookresearch/vicreg main_vicreg.py `Projector`: nn.Linear (with bias) + BatchNorm1d +
  ReLU per hidden layer, then nn.Linear(bias=False)."""
  layers = []
  for i in range(len(sizes) - 2):
    layers += [("linear", sizes[i], sizes[i + 1], True), ("bn", sizes[i + 1], True, True)]
    layers.append(("relu",))
  return layers + [("linear", sizes[-2], sizes[-1], False)]


def layout(params, batch_stats):
  """An sslax ProjectionHead's variables -> the same layer list (ReLU after each hidden block,
  which `test_forward_matches_numpy_of_the_layer_list` checks)."""

  def linear(name):
    p = params[name]
    return ("linear", *p["kernel"].shape, "bias" in p)

  def bn(name):
    p = params.get(name, {})
    return ("bn", batch_stats[name]["mean"].shape[0], "scale" in p, "bias" in p)

  layers, i = [], 0
  while f"dense{i}" in params:
    layers.append(linear(f"dense{i}"))
    if f"bn{i}" in batch_stats:
      layers.append(bn(f"bn{i}"))
    layers.append(("relu",))
    i += 1
  layers.append(linear("out"))
  if "out_bn" in batch_stats:
    layers.append(bn("out_bn"))
  return layers


def _method_config(method, vit=False):
  c = tiny_config(method)
  section = c[method]
  section.proj_hidden_dim, section.proj_dim = HIDDEN, OUT
  if "pred_hidden_dim" in section:
    section.pred_hidden_dim = HIDDEN
  if vit:
    c.model.name, c.model.variant = "vit", "custom"
    c.model.hidden_size, c.model.num_layers, c.model.num_heads = 24, 1, 2
    c.model.patch_size, c.model.posemb = 4, "sincos2d"
  return c


def _heads(config, devices):
  """-> (feature width, {head name: layout}) of the method's network, by shapes only."""
  method = setup_lib.build_method(config, sharding.make_mesh({"data": -1}, devices[:1]))
  net = method.network()
  inputs = method.init_inputs(config.dataset.image_size, 3)
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), *inputs, train=False))
  features = jax.eval_shape(lambda v: net.apply(v, *inputs, train=False)[0], variables)
  heads = {
    name: layout(variables["params"][name], variables["batch_stats"].get(name, {}))
    for name in ("head", "projector", "predictor")
    if name in variables["params"]
  }
  return features.shape[-1], heads


def test_simclr_projection_head_matches_the_reference(devices):
  for layers in (2, 3):  # v1, v2
    c = _method_config("simclr")
    c.simclr.proj_layers = layers
    width, heads = _heads(c, devices)
    assert heads == {"head": simclr_projection_head(layers, width, HIDDEN, OUT)}
    assert heads["head"][-1] == ("bn", OUT, True, False)  # scale, no centre


def test_byol_projector_and_predictor_match_the_reference(devices):
  width, heads = _heads(_method_config("byol"), devices)
  assert heads == {
    "projector": byol_mlp(width, HIDDEN, OUT),
    "predictor": byol_mlp(OUT, HIDDEN, OUT),
  }


def test_mocov3_resnet_heads_match_moco_resnet(devices):
  width, heads = _heads(_method_config("mocov3"), devices)
  assert heads == {
    "projector": moco_v3_mlp(2, width, HIDDEN, OUT),
    "predictor": moco_v3_mlp(2, OUT, HIDDEN, OUT, last_bn=False),
  }


def test_mocov3_vit_heads_match_moco_vit(devices):
  width, heads = _heads(_method_config("mocov3", vit=True), devices)
  assert width == 24
  assert heads == {
    "projector": moco_v3_mlp(3, width, HIDDEN, OUT),
    "predictor": moco_v3_mlp(2, OUT, HIDDEN, OUT),
  }


def test_mocov3_heads_option_overrides_the_backbone_choice(devices):
  c = _method_config("mocov3")
  c.mocov3.heads = "vit"
  width, heads = _heads(c, devices)
  assert heads["projector"] == moco_v3_mlp(3, width, HIDDEN, OUT)


@pytest.mark.parametrize(
  "method,reference", [("barlow_twins", barlow_twins_projector), ("vicreg", vicreg_projector)]
)
def test_embedding_projectors_match_the_reference(method, reference, devices):
  width, heads = _heads(_method_config(method), devices)  # proj_layers 3, as the references
  assert heads == {"projector": reference([width, HIDDEN, HIDDEN, OUT])}


def _forward_numpy(layers, params, x, eps=1e-5):
  """The layer list applied in NumPy with the head's weights: Linear j is dense{j} (the last
  one `out`), the BN after it bn{j} (`out_bn`); BN normalises with the batch statistics."""
  num_linear = sum(layer[0] == "linear" for layer in layers)
  x, j = np.asarray(x, np.float64), -1
  for layer in layers:
    if layer[0] == "linear":
      j += 1
      p = params["out" if j == num_linear - 1 else f"dense{j}"]
      x = x @ np.asarray(p["kernel"], np.float64) + (np.asarray(p["bias"]) if layer[3] else 0.0)
    elif layer[0] == "bn":
      p = params.get("out_bn" if j == num_linear - 1 else f"bn{j}", {})
      x = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
      x = x * np.asarray(p["scale"]) if layer[2] else x
      x = x + np.asarray(p["bias"]) if layer[3] else x
    else:
      x = np.maximum(x, 0.0)
  return x


HEADS = {
  "simclr_v2": (
    dict(num_layers=3, last_bn=True, last_bn_scale=True),
    simclr_projection_head(3, 8, HIDDEN, OUT),
  ),
  "byol": (dict(num_layers=2, hidden_bias=True, out_bias=False), byol_mlp(8, HIDDEN, OUT)),
  "mocov3_vit_predictor": (
    dict(num_layers=2, last_bn=True, out_bias=False),
    moco_v3_mlp(2, 8, HIDDEN, OUT),
  ),
  "mocov3_resnet_predictor": (
    dict(num_layers=2, out_bias=False),
    moco_v3_mlp(2, 8, HIDDEN, OUT, last_bn=False),
  ),
  "vicreg": (
    dict(num_layers=3, hidden_bias=True, out_bias=False),
    vicreg_projector([8, 32, 32, 16]),
  ),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_forward_matches_numpy_of_the_layer_list(name):
  kwargs, reference = HEADS[name]
  head = ProjectionHead(hidden_dim=HIDDEN, out_dim=OUT, **kwargs)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(6, 8)), jnp.float32)
  variables = head.init(jax.random.key(0), x, train=False)
  # Non-trivial BN affines, so that a missing or misplaced scale / shift shows.
  params = jax.tree.map(
    lambda p: p + jnp.asarray(rng.uniform(0.5, 1.5, p.shape), p.dtype), variables["params"]
  )
  assert layout(params, variables["batch_stats"]) == reference
  out, _ = head.apply(
    {"params": params, "batch_stats": variables["batch_stats"]},
    x,
    train=True,
    mutable=["batch_stats"],
  )
  np.testing.assert_allclose(out, _forward_numpy(reference, params, x), rtol=2e-4, atol=2e-4)


def test_defaults_are_unchanged_for_the_other_heads():
  """Without the new options: bias only where no BN follows; a last BN is affine-free."""
  x = jnp.zeros((4, 8))
  plain = ProjectionHead(hidden_dim=HIDDEN, out_dim=OUT, num_layers=2)
  v = plain.init(jax.random.key(0), x, train=False)
  assert layout(v["params"], v["batch_stats"]) == [
    ("linear", 8, HIDDEN, False),
    ("bn", HIDDEN, True, True),
    ("relu",),
    ("linear", HIDDEN, OUT, True),
  ]
  no_bn = ProjectionHead(hidden_dim=HIDDEN, out_dim=OUT, num_layers=2, use_bn=False, last_bn=True)
  v = no_bn.init(jax.random.key(0), x, train=False)
  assert layout(v["params"], v["batch_stats"]) == [
    ("linear", 8, HIDDEN, True),
    ("relu",),
    ("linear", HIDDEN, OUT, False),
    ("bn", OUT, False, False),
  ]
  with pytest.raises(ValueError, match="need last_bn=True"):
    ProjectionHead(last_bn_scale=True).init(jax.random.key(0), x, train=False)
