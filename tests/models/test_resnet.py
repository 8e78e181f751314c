"""ResNet against the reference structures: torchvision's parameter counts and layouts, and the
symmetric padding of torchvision / timm / SimCLR's Conv2dFixedPadding."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslax.models.resnet import ResNet

# torchvision resnet18 / resnet34 / resnet50 parameter counts, minus the 1000-way fc layer.
TORCHVISION_BACKBONE_PARAMS = {
  18: 11_689_512 - (512 * 1000 + 1000),
  34: 21_797_672 - (512 * 1000 + 1000),
  50: 25_557_032 - (2048 * 1000 + 1000),
}


def _abstract_params(model, size=224, channels=3):
  variables = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, channels)), train=False)
  )
  return flax.traverse_util.flatten_dict(variables["params"], sep="/")


@pytest.mark.parametrize("depth", sorted(TORCHVISION_BACKBONE_PARAMS))
def test_parameter_count_equals_torchvision(depth):
  params = _abstract_params(ResNet(depth=depth, stem="imagenet"))
  assert sum(p.size for p in params.values()) == TORCHVISION_BACKBONE_PARAMS[depth]


def test_resnet50_layout_is_torchvision_v1_5():
  """Blocks per stage (3, 4, 6, 3); the stride sits on the 3x3 conv of a stage's first block;
  bottleneck widths 64..512 expanded 4x; a projection shortcut on each stage's first block."""
  params = _abstract_params(ResNet(depth=50, stem="imagenet"))
  blocks = {name.split("/")[0] for name in params if name.startswith("stage")}
  for stage, count in enumerate((3, 4, 6, 3), start=1):
    assert {b for b in blocks if b.startswith(f"stage{stage}_")} == {
      f"stage{stage}_block{i}" for i in range(1, count + 1)
    }
    width = 64 * 2 ** (stage - 1)
    first = f"stage{stage}_block1"
    assert params[f"{first}/Conv_0/kernel"].shape[-1] == width  # 1x1 reduce
    assert params[f"{first}/Conv_1/kernel"].shape == (3, 3, width, width)
    assert params[f"{first}/Conv_2/kernel"].shape[-1] == 4 * width  # 1x1 expand
    assert params[f"{first}/proj/kernel"].shape[:2] == (1, 1)
  assert params["stem_conv/kernel"].shape == (7, 7, 3, 64)


def _numpy_conv(x, kernel, stride, pad):
  """Cross-correlation as torch.nn.Conv2d: zero padding `pad` on both sides. x [H, W, Ci]."""
  x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
  k = kernel.shape[0]
  out_h = (x.shape[0] - k) // stride + 1
  out_w = (x.shape[1] - k) // stride + 1
  out = np.zeros((out_h, out_w, kernel.shape[-1]))
  for i in range(out_h):
    for j in range(out_w):
      patch = x[i * stride : i * stride + k, j * stride : j * stride + k]
      out[i, j] = np.tensordot(patch, kernel, axes=([0, 1, 2], [0, 1, 2]))
  return out


def test_strided_conv_pads_symmetrically_on_even_inputs():
  """The stride-2 3x3 conv of stage 2 on an even (8 x 8) map equals a torch-style conv with one
  zero pixel on every side (flax "SAME" would pad 0 before and 1 after)."""
  model = ResNet(depth=10, width=0.125, stem="small")
  x = jax.random.uniform(jax.random.PRNGKey(1), (1, 8, 8, 1))
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  _, state = model.apply(variables, x, train=False, capture_intermediates=True)
  inter = state["intermediates"]
  block_in = np.asarray(inter["stage1_block1"]["__call__"][0][0])  # [8, 8, C]
  kernel = np.asarray(variables["params"]["stage2_block1"]["Conv_0"]["kernel"])
  got = np.asarray(inter["stage2_block1"]["Conv_0"]["__call__"][0][0])
  want = _numpy_conv(block_in, kernel, stride=2, pad=1)
  assert got.shape == want.shape == (4, 4, kernel.shape[-1])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_imagenet_stem_pools_like_torchvision():
  """7x7/2 conv padded 3 and a 3x3/2 max-pool padded 1 (with -inf) on both sides: 32 px -> 8 px,
  the pool's output equal to a NumPy max-pool of the stem's activations."""
  model = ResNet(depth=10, width=0.125, stem="imagenet")
  x = jax.random.uniform(jax.random.PRNGKey(2), (1, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  _, state = model.apply(variables, x, train=False, capture_intermediates=True)
  inter = state["intermediates"]
  conv_out = np.asarray(inter["stem_conv"]["__call__"][0][0])
  kernel = np.asarray(variables["params"]["stem_conv"]["kernel"])
  np.testing.assert_allclose(
    conv_out, _numpy_conv(np.asarray(x[0]), kernel, stride=2, pad=3), rtol=1e-4, atol=1e-5
  )
  bn_out = np.maximum(np.asarray(inter["stem_bn"]["__call__"][0][0]), 0.0)  # [16, 16, C]
  padded = np.pad(bn_out, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  pooled = np.stack(
    [
      np.stack([padded[2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(0, 1)) for j in range(8)])
      for i in range(8)
    ]
  )
  block_in = np.asarray(inter["stage1_block1"]["Conv_0"]["__call__"][0][0])
  assert block_in.shape[:2] == (8, 8)
  # stage1_block1's first conv sees the pooled map: recompute it from the NumPy pool.
  kernel0 = np.asarray(variables["params"]["stage1_block1"]["Conv_0"]["kernel"])
  np.testing.assert_allclose(
    block_in, _numpy_conv(pooled, kernel0, stride=1, pad=1), rtol=1e-4, atol=1e-5
  )
