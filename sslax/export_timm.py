"""Encoders for PyTorch: timm's parameter names and layouts in safetensors, and ONNX through timm.

`python -m sslax.export --format timm` writes, next to each other:

  model.safetensors  the backbone's weights under timm's names and layouts (conv kernels OIHW,
                     linear weights [out, in], BatchNorm weight/bias/running_mean/running_var/
                     num_batches_tracked, ViT attention as timm's fused `attn.qkv`), float32.
  config.json        timm's Hugging Face hub config: "architecture" (a timm model name),
                     "model_args" (keyword arguments of `timm.create_model`) and
                     "pretrained_cfg" (input size, mean/std, crop_pct, interpolation).
  README.md          a model card: method, data, steps, the run's evaluations, the command.
  encoder.json       sslax's spec (`sslax.load_encoder` reads the safetensors back).

Load it with timm alone (no sslax, no jax):

  model = timm.create_model("local-dir:PATH", pretrained=True)   # or, by hand:
  cfg = json.load(open("PATH/config.json"))
  model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"])
  model.load_state_dict(safetensors.torch.load_file("PATH/model.safetensors"))

`--format onnx` writes the same files and PATH/model.onnx: the timm twin, checked against the
sslax encoder, exported by `torch.onnx.export` with a dynamic batch axis and checked again in
onnxruntime. That runs `sslax/_torch_export.py` in a subprocess and needs the `export` extra
(`pip install "sslax[export]"`: torch, timm, onnx, onnxscript, onnxruntime).

The model's input is timm's: float32 [B, C, S, S] already preprocessed (config.json's
pretrained_cfg: resize, centre crop, scale to [0, 1], (x - mean) / std); its output is the
features [B, D] of sslax's backbone (`num_classes=0`: no classifier).

Supported: ResNet with the ImageNet stem at width 1 (timm's `resnet18/34/50/101`; depth 10 as
`resnet18` with `layers=[1, 1, 1, 1]`) and ViT (any size and patch, learned or sin-cos position
embeddings, cls or mean pooling, with or without a class token; DINOv2's options: LayerScale as
timm's `init_values` (`blocks.i.ls1.gamma`), registers as `reg_tokens` (`reg_token`; the (1 + N)-row
`pos_embed` gets zero rows for them, as sslax gives them no position), SwiGLU as timm's DINOv2
giant layout (`vit_giant_patch14_dinov2`'s SwiGLUPacked: `mlp.fc1` = the fused gate|value
projection), and the mask token, which no encoder input uses, is left out and reads back as
zeros). Not supported, as timm's ResNet cannot build them: the small-image stem (a 3x3/1 conv
without max-pool) and width multipliers (timm's 7x7 stem always has 64 channels). Those export in
the other formats.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sslax.models import resnet as resnet_lib
from sslax.models import vit as vit_lib

SAFETENSORS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
ONNX_FILE = "model.onnx"
ONNX_INPUT, ONNX_OUTPUT = "pixel_values", "features"
TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torch_export.py")
TORCHVISION_STUB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torchvision_stub.py")
EXPORT_EXTRA = 'pip install "sslax[export]"'

SUPPORTED = (
  "ResNet-10/18/34/50/101 with stem='imagenet' and width 1, and ViT (any variant, patch size, "
  "posemb, pool, with or without a class token, LayerScale, registers, ffn mlp or swiglu)"
)
# timm builds SwiGLU blocks only inside models registered with them: DINOv2's giant
# (mlp_layer=SwiGLUPacked, act_layer=SiLU); model_args override all of its sizes.
_TIMM_SWIGLU_VIT = "vit_giant_patch14_dinov2"
# sslax variables no timm model has, and that the features never use: dropped on export,
# zeros on import. The mask token only enters with `masks=` (masked-image training).
_NOT_IN_TIMM = ("params/mask_token",)
# timm's registered names for the sslax variants (ViT: (variant, patch size) -> name); other
# patch sizes and custom ViTs use the name of the same width with explicit model_args.
_TIMM_RESNETS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101"}
_TIMM_VITS = {
  ("Ti", 16): "vit_tiny_patch16_224",
  ("S", 8): "vit_small_patch8_224",
  ("S", 16): "vit_small_patch16_224",
  ("S", 32): "vit_small_patch32_224",
  ("B", 8): "vit_base_patch8_224",
  ("B", 16): "vit_base_patch16_224",
  ("B", 32): "vit_base_patch32_224",
  ("L", 14): "vit_large_patch14_224",
  ("L", 16): "vit_large_patch16_224",
  ("L", 32): "vit_large_patch32_224",
}
_VIT_SIZE_NAMES = {192: "tiny", 384: "small", 768: "base", 1024: "large"}


class UnsupportedForTimm(ValueError):
  """The backbone has no timm equivalent."""


# ---------------------------------------------------------------------------------------------
# safetensors, in NumPy (format: 8-byte little-endian header length, JSON header, raw bytes)

_ST_DTYPES = {
  "float64": "F64",
  "float32": "F32",
  "float16": "F16",
  "bfloat16": "BF16",
  "int64": "I64",
  "int32": "I32",
  "int16": "I16",
  "int8": "I8",
  "uint8": "U8",
  "bool": "BOOL",
}
_NP_DTYPES = {code: name for name, code in _ST_DTYPES.items()}


def write_safetensors(path: str, tensors: dict, metadata: dict | None = None) -> None:
  """Writes {name: array} as a safetensors file (loads with `safetensors.torch.load_file`)."""
  header, arrays, offset = {}, [], 0
  for name in sorted(tensors):
    a = np.asarray(tensors[name])
    if a.dtype.name not in _ST_DTYPES:
      raise ValueError(f"{name}: dtype {a.dtype} has no safetensors code")
    a = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")  # keeps 0-dim shapes
    header[name] = {
      "dtype": _ST_DTYPES[a.dtype.name],
      "shape": list(a.shape),
      "data_offsets": [offset, offset + a.nbytes],
    }
    arrays.append(a)
    offset += a.nbytes
  if metadata:
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
  blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for a in arrays:
      f.write(a.tobytes())
  os.replace(tmp, path)


def read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """-> ({name: numpy array}, metadata) of a safetensors file."""
  with open(path, "rb") as f:
    data = f.read()
  (length,) = struct.unpack("<Q", data[:8])
  header = json.loads(data[8 : 8 + length])
  metadata = header.pop("__metadata__", {}) or {}
  body = memoryview(data)[8 + length :]
  tensors = {}
  for name, entry in header.items():
    if entry["dtype"] not in _NP_DTYPES:
      raise ValueError(f"{path}: tensor {name} has unsupported dtype {entry['dtype']}")
    dtype = np.dtype(jnp.dtype(_NP_DTYPES[entry["dtype"]])).newbyteorder("<")
    start, end = entry["data_offsets"]
    tensors[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(entry["shape"]).copy()
  return tensors, metadata


# ---------------------------------------------------------------------------------------------
# The mapping: each timm tensor is made from zero or more sslax variables ("params/a/b/kernel")


class _Link:
  """timm tensor `name` = forward(*sslax arrays at `paths`); backward inverts it."""

  def __init__(self, name: str, paths: Sequence[str], forward: Callable, backward: Callable):
    self.name, self.paths, self.forward, self.backward = name, tuple(paths), forward, backward


def _conv(name: str, path: str) -> _Link:  # HWIO <-> OIHW
  return _Link(
    name, [path], lambda k: k.transpose(3, 2, 0, 1), lambda w: (w.transpose(2, 3, 1, 0),)
  )


def _same(name: str, path: str) -> _Link:
  return _Link(name, [path], lambda x: x, lambda x: (x,))


def _const(name: str, value: np.ndarray) -> _Link:  # no sslax variable (dropped on import)
  return _Link(name, [], lambda: value, lambda x: ())


def _batchnorm(name: str, path: str) -> list[_Link]:
  return [
    _same(f"{name}.weight", f"params/{path}/scale"),
    _same(f"{name}.bias", f"params/{path}/bias"),
    _same(f"{name}.running_mean", f"batch_stats/{path}/mean"),
    _same(f"{name}.running_var", f"batch_stats/{path}/var"),
    # torch's BatchNorm buffer (counts training steps, used only with momentum=None): present so
    # that a strict load_state_dict of any version finds every key.
    _const(f"{name}.num_batches_tracked", np.zeros((), np.int64)),
  ]


def _p(path: str) -> str:
  return f"params/{path}"


def _layernorm(name: str, path: str) -> list[_Link]:
  return [_same(f"{name}.weight", _p(f"{path}/scale")), _same(f"{name}.bias", _p(f"{path}/bias"))]


def _dense(name: str, path: str) -> list[_Link]:  # [in, out] <-> [out, in]
  return [
    _Link(f"{name}.weight", [_p(f"{path}/kernel")], lambda k: k.T, lambda w: (w.T,)),
    _same(f"{name}.bias", _p(f"{path}/bias")),
  ]


def _resnet_links(flat: dict) -> list[_Link]:
  links = [_conv("conv1.weight", _p("stem_conv/kernel")), *_batchnorm("bn1", "stem_bn")]
  blocks = sorted(
    {key.split("/")[1] for key in flat if key.startswith("params/stage")},
    key=lambda b: tuple(int(n) for n in b.replace("stage", "").split("_block")),
  )
  for block in blocks:
    stage, index = (int(n) for n in block.replace("stage", "").split("_block"))
    dst = f"layer{stage}.{index - 1}"
    # Conv_j / BatchNorm_j are named in call order: conv1/bn1, conv2/bn2 (, conv3/bn3).
    num_convs = sum(
      1 for k in flat if k.startswith(f"params/{block}/Conv_") and k.endswith("/kernel")
    )
    for j in range(num_convs):
      links.append(_conv(f"{dst}.conv{j + 1}.weight", _p(f"{block}/Conv_{j}/kernel")))
      links += _batchnorm(f"{dst}.bn{j + 1}", f"{block}/BatchNorm_{j}")
    if f"params/{block}/proj/kernel" in flat:
      links.append(_conv(f"{dst}.downsample.0.weight", _p(f"{block}/proj/kernel")))
      links += _batchnorm(f"{dst}.downsample.1", f"{block}/proj_bn")
  return links


def _vit_links(backbone: vit_lib.ViT, flat: dict, grid: tuple[int, int]) -> list[_Link]:
  width = backbone.width
  patch = _p("patch_embed")
  links = [
    _conv("patch_embed.proj.weight", f"{patch}/kernel"),
    _same("patch_embed.proj.bias", f"{patch}/bias"),
  ]
  has_cls_pos = _p("cls_pos_embedding") in flat
  registers = backbone.num_registers
  if _p("pos_embedding") in flat:  # learned [1, h, w, D] -> [1, (1 + R +) h * w, D]
    table = _p("pos_embedding")
    if has_cls_pos:
      # timm's (1 + R + N)-row table (no_embed_class=False) has rows for the registers, which
      # sslax gives no position: zeros, and an import insists on zeros.
      def pos_back(e):
        if np.any(e[:, 1 : 1 + registers]):
          raise ValueError(
            "timm pos_embed has nonzero rows for the register tokens; sslax's registers have "
            "no position embedding (add those rows to reg_token first)."
          )
        return e[:, :1], e[:, 1 + registers :].reshape(1, *grid, width)

      links.append(
        _Link(
          "pos_embed",
          [_p("cls_pos_embedding"), table],
          lambda c, t: np.concatenate(
            [c, np.zeros((1, registers, width), c.dtype), t.reshape(1, -1, width)], axis=1
          ),
          pos_back,
        )
      )
    else:
      links.append(
        _Link(
          "pos_embed",
          [table],
          lambda t: t.reshape(1, -1, width),
          lambda e: (e.reshape(1, *grid, width),),
        )
      )
  else:  # fixed sin-cos: timm learns a table, so it gets the values (the class token: none)
    links.append(_const("pos_embed", vit_lib.sincos_2d(*grid, width)[None]))
  if _p("cls_token") in flat:
    links.append(_same("cls_token", _p("cls_token")))
  if _p("register_tokens") in flat:
    links.append(_same("reg_token", _p("register_tokens")))

  def qkv_weight(*kernels):  # 3 x [D, N, H] -> [3D, D]: rows (q|k|v, head, head_dim)
    return np.concatenate([k.reshape(width, width).T for k in kernels], axis=0)

  def qkv_weight_back(w):
    return tuple(part.T.reshape(width, backbone.num_heads, -1) for part in np.split(w, 3))

  for i in range(backbone.depth):
    src, dst = f"encoder/block{i}", f"blocks.{i}"
    attn = f"{src}/attn"
    q, k, v = (_p(f"{attn}/{n}") for n in ("query", "key", "value"))
    links.append(
      _Link(
        f"{dst}.attn.qkv.weight",
        [f"{q}/kernel", f"{k}/kernel", f"{v}/kernel"],
        qkv_weight,
        qkv_weight_back,
      )
    )
    if f"{k}/bias" in flat:
      links.append(
        _Link(
          f"{dst}.attn.qkv.bias",
          [f"{q}/bias", f"{k}/bias", f"{v}/bias"],
          lambda *b: np.concatenate([x.reshape(-1) for x in b]),
          lambda b: tuple(x.reshape(backbone.num_heads, -1) for x in np.split(b, 3)),
        )
      )
    else:
      # No key bias in sslax: a zero one in timm. On import timm's key bias is dropped, which is
      # exact: it adds q.b_k to all logits of a query's row, and softmax ignores that.
      links.append(
        _Link(
          f"{dst}.attn.qkv.bias",
          [f"{q}/bias", f"{v}/bias"],
          lambda bq, bv: np.concatenate(
            [bq.reshape(-1), np.zeros(width, bq.dtype), bv.reshape(-1)]
          ),
          lambda b: (
            b[:width].reshape(backbone.num_heads, -1),
            b[2 * width :].reshape(backbone.num_heads, -1),
          ),
        )
      )
    links += [
      _Link(
        f"{dst}.attn.proj.weight",
        [_p(f"{attn}/out/kernel")],
        lambda k: k.reshape(width, width).T,
        lambda w: (w.T.reshape(backbone.num_heads, -1, width),),
      ),
      _same(f"{dst}.attn.proj.bias", _p(f"{attn}/out/bias")),
      *_layernorm(f"{dst}.norm1", f"{src}/norm1"),
      *_layernorm(f"{dst}.norm2", f"{src}/norm2"),
    ]
    if backbone.ffn == "swiglu":  # SwiGLUPacked: fc1 = [gate | value] (silu on the first half)
      links += [
        *_dense(f"{dst}.mlp.fc1", f"{src}/mlp/w12"),
        *_dense(f"{dst}.mlp.fc2", f"{src}/mlp/w3"),
      ]
    else:
      links += [
        *_dense(f"{dst}.mlp.fc1", f"{src}/mlp/fc1"),
        *_dense(f"{dst}.mlp.fc2", f"{src}/mlp/fc2"),
      ]
    for scale in ("ls1", "ls2"):
      if _p(f"{src}/{scale}/gamma") in flat:
        links.append(_same(f"{dst}.{scale}.gamma", _p(f"{src}/{scale}/gamma")))
  links += _layernorm("norm", "encoder_norm")
  return links


def _unscan(flat: dict, depth: int) -> dict:
  """Params of `nn.scan`ned blocks ("encoder/blocks/..." stacked on [depth]) -> "block{i}"."""
  out = {}
  for key, value in flat.items():
    collection, _, rest = key.partition("/")
    if rest.startswith("encoder/blocks/"):
      for i in range(depth):
        out[f"{collection}/encoder/block{i}/{rest[len('encoder/blocks/') :]}"] = value[i]
    else:
      out[key] = value
  return out


def _rescan(flat: dict, depth: int) -> dict:
  out, stacked = {}, {}
  for key, value in flat.items():
    collection, _, rest = key.partition("/")
    if rest.startswith("encoder/block"):
      index, _, tail = rest[len("encoder/block") :].partition("/")
      stacked.setdefault(f"{collection}/encoder/blocks/{tail}", {})[int(index)] = value
    else:
      out[key] = value
  for key, parts in stacked.items():
    out[key] = np.stack([parts[i] for i in range(depth)])
  return out


def _flatten(variables) -> dict[str, np.ndarray]:
  flat = traverse_util.flatten_dict(jax.device_get(dict(variables)), sep="/")
  return {k: np.asarray(v, np.float32) for k, v in flat.items()}


# ---------------------------------------------------------------------------------------------
# Architecture


class TimmSpec:
  """What timm builds: `timm.create_model(architecture, **model_args)` and its input."""

  def __init__(self, architecture: str, model_args: dict, links: list, first_conv, classifier):
    self.architecture, self.model_args, self.links = architecture, model_args, links
    self.first_conv, self.classifier = first_conv, classifier


def _sslax_flat(backbone, variables) -> dict[str, np.ndarray]:
  """{"params/a/b/kernel": float32 array}, scanned ViT blocks split into block{i}."""
  flat = _flatten(variables)
  if isinstance(backbone, vit_lib.ViT) and backbone.scan:
    flat = _unscan(flat, backbone.depth)
  return flat


def timm_spec(backbone, variables, image_size: int, channels: int) -> TimmSpec:
  """The timm model equal to the sslax `backbone` with `variables` (raises UnsupportedForTimm)."""
  return _timm_spec(backbone, _sslax_flat(backbone, variables), image_size, channels)


def _timm_spec(backbone, flat: dict, image_size: int, channels: int) -> TimmSpec:
  if isinstance(backbone, resnet_lib.ResNet):
    if backbone.stem != "imagenet":
      raise UnsupportedForTimm(
        f"ResNet stem={backbone.stem!r} (a 3x3 stride-1 conv without max-pool) has no timm "
        f"equivalent: timm's ResNet stems all start with a stride-2 conv and a pool. Supported: "
        f"{SUPPORTED}. The bundle, stablehlo and savedmodel formats take every backbone."
      )
    if max(int(64 * backbone.width), 1) != 64:
      # timm's ResNet takes `channels` for its stages, but its single-conv stem always has 64
      # outputs (ResNet.__init__: inplanes = 64 unless a deep stem), so the widened or narrowed
      # stem and first stage of sslax have no timm counterpart.
      raise UnsupportedForTimm(
        f"ResNet width={backbone.width} has no timm equivalent: timm's 7x7 stem always has 64 "
        f"channels. Supported: {SUPPORTED}. The bundle, stablehlo and savedmodel formats take "
        "every backbone."
      )
    kind, layout = resnet_lib._LAYOUTS[backbone.depth]
    architecture = _TIMM_RESNETS.get(backbone.depth, "resnet18" if kind == "basic" else "resnet50")
    args: dict = {}
    if backbone.depth not in _TIMM_RESNETS:
      args["layers"] = list(layout)
    if channels != 3:
      args["in_chans"] = channels
    args["num_classes"] = 0
    return TimmSpec(architecture, args, _resnet_links(flat), "conv1", "fc")
  if isinstance(backbone, vit_lib.ViT):
    p = backbone.patch_size
    if "params/pos_embedding" in flat:
      grid = tuple(flat["params/pos_embedding"].shape[1:3])
      if grid != (image_size // p, image_size // p):
        raise UnsupportedForTimm(
          f"The learned position embeddings are a {grid} grid but the input is {image_size} px "
          f"({image_size // p} patches of {p} a side): timm would resample them differently "
          f"(bicubic) than sslax (bilinear). Export at the native size, {grid[0] * p} px."
        )
    else:
      grid = (image_size // p, image_size // p)
    mlp_dim = backbone.mlp_dim or 4 * backbone.width
    if backbone.ffn == "swiglu":  # timm's SwiGLUPacked: fc1 has 2 x the hidden size
      mlp_dim = 2 * vit_lib.swiglu_hidden_size(mlp_dim)
    ratio = mlp_dim / backbone.width
    while int(backbone.width * ratio) < mlp_dim:  # timm builds int(embed_dim * mlp_ratio)
      ratio = math.nextafter(ratio, math.inf)
    variant = next(
      (
        n
        for n, dims in vit_lib.VARIANTS.items()
        if dims == (backbone.width, backbone.depth, backbone.num_heads)
      ),
      None,
    )
    architecture = _TIMM_VITS.get((variant, p)) or (
      f"vit_{_VIT_SIZE_NAMES.get(backbone.width, 'small')}_patch16_224"
    )
    if backbone.ffn == "swiglu":
      architecture = _TIMM_SWIGLU_VIT
    class_token = "params/cls_token" in flat
    args = {
      "img_size": grid[0] * p,
      "patch_size": p,
      "in_chans": channels,
      "embed_dim": backbone.width,
      "depth": backbone.depth,
      "num_heads": backbone.num_heads,
      "mlp_ratio": ratio,
      "qkv_bias": True,
      "class_token": class_token,
      # sslax adds position embeddings to the patches before the class token is prepended;
      # with a learned class-token position the table is timm's (1 + N)-row one.
      # Registers (sslax: no position) without that class-token row: timm's no_embed_class too.
      "no_embed_class": (class_token or backbone.num_registers > 0)
      and "params/cls_pos_embedding" not in flat,
      # sslax applies the final LayerNorm to every token, then pools: timm's fc_norm=False.
      "global_pool": "token" if backbone.pool == "cls" else "avg",
      "fc_norm": False,
      "num_classes": 0,
    }
    # DINOv2's options, named only when used (older exports' config.json stay as they were);
    # the SwiGLU architecture has LayerScale by default, so it is always named there.
    if backbone.layerscale_init or backbone.ffn == "swiglu":
      args["init_values"] = backbone.layerscale_init or None
    if backbone.num_registers:
      args["reg_tokens"] = backbone.num_registers
    return TimmSpec(
      architecture, args, _vit_links(backbone, flat, grid), "patch_embed.proj", "head"
    )
  raise UnsupportedForTimm(
    f"{type(backbone).__name__} has no timm equivalent; supported: {SUPPORTED}."
  )


def to_timm(backbone, variables, image_size: int, channels: int) -> tuple[TimmSpec, dict]:
  """-> (TimmSpec, timm state dict {name: float32 numpy array}) of the sslax backbone."""
  flat = _sslax_flat(backbone, variables)
  spec = _timm_spec(backbone, flat, image_size, channels)
  state, used = {}, set()
  for link in spec.links:
    missing = [p for p in link.paths if p not in flat]
    if missing:
      raise ValueError(f"timm export: {link.name} needs {missing}, which the params lack")
    state[link.name] = np.asarray(link.forward(*(flat[p] for p in link.paths)))
    used.update(link.paths)
  unused = sorted(set(flat) - used - set(_NOT_IN_TIMM))
  if unused:  # a variable the mapping does not know would silently change the function
    raise UnsupportedForTimm(f"timm export: no timm parameter for {unused[:5]}")
  return spec, state


def from_timm(backbone, state: dict, image_size: int, channels: int) -> dict:
  """The inverse of `to_timm`: a timm state dict -> sslax variables of `backbone`."""
  template = jax.eval_shape(
    lambda: backbone.init(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, channels)), train=False
    )
  )
  shapes = {k: v.shape for k, v in traverse_util.flatten_dict(dict(template), sep="/").items()}
  scanned = isinstance(backbone, vit_lib.ViT) and backbone.scan
  zeros = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
  spec = _timm_spec(
    backbone, _unscan(zeros, backbone.depth) if scanned else zeros, image_size, channels
  )
  flat = {}
  for link in spec.links:
    if link.name not in state:
      if link.paths:
        raise ValueError(f"timm state dict lacks {link.name}")
      continue
    for path, value in zip(link.paths, link.backward(np.asarray(state[link.name], np.float32))):
      flat[path] = value
  if scanned:
    flat = _rescan(flat, backbone.depth)
  for key in _NOT_IN_TIMM:
    if key in shapes:
      flat[key] = np.zeros(shapes[key], np.float32)
  for key, shape in shapes.items():
    if key not in flat or tuple(flat[key].shape) != tuple(shape):
      got = None if key not in flat else flat[key].shape
      raise ValueError(f"timm state dict gives {key} shape {got}, the model needs {shape}")
  return _unflatten(flat)


def _unflatten(flat: dict) -> dict:
  return traverse_util.unflatten_dict(flat, sep="/")


# ---------------------------------------------------------------------------------------------
# Files


def hub_config(spec: TimmSpec, num_features: int, preprocessing: dict, license: str) -> dict:
  """timm's Hugging Face hub config.json (what `timm.create_model("local-dir:PATH")` reads)."""
  channels, size = preprocessing["channels"], preprocessing["image_size"]
  return {
    "architecture": spec.architecture,
    "num_classes": 0,
    "num_features": int(num_features),
    "global_pool": spec.model_args.get("global_pool", "avg"),
    "model_args": spec.model_args,
    "pretrained_cfg": {
      "tag": "sslax",
      "custom_load": False,
      "input_size": [channels, size, size],
      "fixed_input_size": "img_size" in spec.model_args,
      "interpolation": "bilinear",
      "crop_pct": float(preprocessing.get("crop_fraction", 1.0)),
      "crop_mode": "center",
      "mean": [float(m) for m in preprocessing["mean"]],
      "std": [float(s) for s in preprocessing["std"]],
      "num_classes": 0,
      "first_conv": spec.first_conv,
      "classifier": spec.classifier,
      "license": license,
    },
  }


def _model_name(model: dict) -> str:
  if model.get("name") == "resnet":
    width = model.get("width", 1.0)
    return f"ResNet-{model.get('depth')}" + ("" if width == 1 else f" ({width}x)")
  if model.get("name") == "vit":
    return f"ViT-{model.get('variant')}/{model.get('patch_size')}"
  return str(model.get("name"))


def _fmt(value) -> str:
  return f"{100 * value:.2f}%" if isinstance(value, float) and 0 <= value <= 1 else str(value)


def model_card(
  *,
  spec: TimmSpec,
  hub: dict,
  sslax_spec: dict,
  run_config: dict | None,
  evaluations: Sequence[dict],
  command: str | None,
  license: str,
  onnx: dict | None,
) -> str:
  """README.md beside the weights (Hugging Face model-card layout, YAML front matter)."""
  source = sslax_spec.get("source", {})
  method = source.get("method", "unknown")
  dataset = source.get("dataset", "unknown")
  pre = hub["pretrained_cfg"]
  model = sslax_spec["model"]
  lines = [
    "---",
    f"license: {license}",
    "library_name: timm",
    "pipeline_tag: image-feature-extraction",
    f"tags: [image-feature-extraction, timm, sslax, self-supervised, {method}]",
    "---",
    "",
    f"# {_model_name(model)} encoder pretrained with {method} (sslax)",
    "",
    (
      f"A self-supervised image encoder ({model.get('name')}, features of dimension "
      f"{hub['num_features']}) pretrained with sslax {sslax_spec.get('sslax_version')}, exported in "
      "timm's layout: `model.safetensors` loads into `timm.create_model(...)` with a strict "
      "`load_state_dict` and computes the sslax encoder's features (float32; sslax's tests "
      "hold the mapping to 1e-4 max abs). timm's transforms resize with PIL, sslax's "
      "evaluation with TensorFlow, so preprocessed pixels differ slightly."
    ),
    "",
    "| | |",
    "| --- | --- |",
    f"| method | {method} |",
    f"| training data | {dataset} |",
    f"| training steps | {source.get('step', 'unknown')} |",
    f"| sslax model | `{json.dumps(model, sort_keys=True)}` |",
    f"| timm architecture | `{spec.architecture}` |",
    f"| timm model_args | `{json.dumps(spec.model_args)}` |",
    (
      f"| input | float32 [B, {pre['input_size'][0]}, {pre['input_size'][1]}, "
      f"{pre['input_size'][2]}] (NCHW) |"
    ),
    (
      f"| preprocessing | centre crop (crop_pct {pre['crop_pct']}), bilinear resize to "
      f"{pre['input_size'][1]} px, scale to [0, 1], mean {pre['mean']}, std {pre['std']} |"
    ),
    f"| output | features [B, {hub['num_features']}] (no classifier) |",
    f"| licence | {license} |",
    f"| source checkpoint | {source.get('workdir', 'unknown')} |",
    "",
    "## Evaluation",
    "",
  ]
  rows = []
  for record in evaluations:
    for encoder, metrics in (record.get("results") or {}).items():
      for name, value in (metrics or {}).items():
        if name == "feature_dim" or isinstance(value, (dict, list)):
          continue
        rows.append(
          f"| {record.get('protocol')} | {record.get('step')} | {encoder} | {name} | {_fmt(value)} |"
        )
  if rows:
    lines += [
      "From the run's results.json (fractions in [0, 1] shown as percentages):",
      "",
      "| protocol | step | encoder | metric | value |",
      "| --- | --- | --- | --- | --- |",
      *rows,
    ]
  else:
    lines.append("No evaluation recorded in the run's results.json.")
  lines += [
    "",
    "## Use",
    "",
    "```python",
    "import timm, torch",
    'model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True).eval()',
    "config = timm.data.resolve_data_config({}, model=model)",
    "transform = timm.data.create_transform(**config)  # PIL image -> tensor",
    "with torch.no_grad():",
    f"  features = model(transform(image).unsqueeze(0))  # [1, {hub['num_features']}]",
    "```",
    "",
    "Without timm's folder loader:",
    "",
    "```python",
    "import json, timm, safetensors.torch",
    'cfg = json.load(open("config.json"))',
    'model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"])',
    'model.load_state_dict(safetensors.torch.load_file("model.safetensors"))',
    "```",
  ]
  if onnx:
    lines += [
      "",
      (
        f"`{ONNX_FILE}` is the same encoder as an ONNX graph (input `{ONNX_INPUT}` "
        f"[batch, C, S, S] float32, preprocessed as above; output `{ONNX_OUTPUT}` [batch, D]):"
      ),
      "",
      "```python",
      "import onnxruntime",
      f'session = onnxruntime.InferenceSession("{ONNX_FILE}")',
      f'features = session.run(["{ONNX_OUTPUT}"], {{"{ONNX_INPUT}": pixels}})[0]',
      "```",
      "",
      "Checked at export against the sslax encoder on random inputs (max abs difference): "
      + ", ".join(
        f"{k.replace('_max_abs_diff', '')} {v:.2g}"
        for k, v in onnx.items()
        if k.endswith("_max_abs_diff")
      )
      + f" (torch {onnx.get('torch_version')}, timm {onnx.get('timm_version')}, "
      f"onnxruntime {onnx.get('onnxruntime_version')}).",
    ]
  lines += ["", "## How it was made", ""]
  if command:
    lines += ["```", command, "```", ""]
  if run_config is not None:
    lines += [
      "<details><summary>Training config (sslax)</summary>",
      "",
      "```json",
      json.dumps(run_config, indent=2, sort_keys=True),
      "```",
      "",
      "</details>",
    ]
  return "\n".join(lines) + "\n"


def write(
  out: str,
  *,
  backbone,
  variables,
  preprocessing: dict,
  sslax_spec: dict,
  run_config: dict | None = None,
  evaluations: Sequence[dict] = (),
  command: str | None = None,
  license: str = "unknown",
  onnx: bool = False,
) -> dict:
  """Writes model.safetensors, config.json and README.md (and model.onnx) to `out`.

  Returns what goes into encoder.json's "timm" entry.
  """
  channels, size = preprocessing["channels"], preprocessing["image_size"]
  spec, state = to_timm(backbone, variables, size, channels)
  hub = hub_config(spec, sslax_spec["feature_dim"], preprocessing, license)
  os.makedirs(out, exist_ok=True)
  write_safetensors(
    os.path.join(out, SAFETENSORS_FILE),
    state,
    metadata={"format": "pt", "sslax_version": sslax_spec.get("sslax_version", "")},
  )
  with open(os.path.join(out, CONFIG_FILE), "w") as f:
    json.dump(hub, f, indent=2)
  info = {"architecture": spec.architecture, "model_args": spec.model_args}
  if onnx:
    info["onnx"] = export_onnx(out, backbone, variables, size, channels)
  card = model_card(
    spec=spec,
    hub=hub,
    sslax_spec=sslax_spec,
    run_config=run_config,
    evaluations=evaluations,
    command=command,
    license=license,
    onnx=info.get("onnx"),
  )
  with open(os.path.join(out, CARD_FILE), "w") as f:
    f.write(card)
  return info


def export_onnx(out: str, backbone, variables, size: int, channels: int, tol: float = 1e-3) -> dict:
  """out/model.onnx from the timm twin of out/model.safetensors (`_torch_export.py`, in a
  subprocess with torch). Both the twin and the ONNX graph (batch sizes 1 and 3) are checked
  against the sslax backbone on random inputs; returns their max abs differences."""
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(3, size, size, channels)).astype(np.float32)
  fp32 = backbone.clone(dtype=jnp.float32)  # the twin computes in float32
  with jax.default_matmul_precision("highest"):  # full float32 on accelerators too
    expected = np.asarray(jax.jit(lambda v, x: fp32.apply(v, x, train=False))(variables, inputs))
  with tempfile.TemporaryDirectory() as tmp:
    ref, result = os.path.join(tmp, "reference.npz"), os.path.join(tmp, "result.json")
    np.savez(ref, inputs=inputs.transpose(0, 3, 1, 2), features=expected)
    command = [sys.executable, TORCH_SCRIPT, "--dir", out, "--reference", ref, "--result", result]
    r = subprocess.run(command + ["--tol", str(tol)], capture_output=True, text=True, check=False)
    if r.returncode == 3:  # the script's code for "torch, timm or onnxruntime missing"
      raise RuntimeError(
        f"{r.stderr.strip()}\nThe onnx format needs the export extra: {EXPORT_EXTRA}"
      )
    if r.returncode != 0:
      raise RuntimeError(f"ONNX export failed:\n{r.stderr[-4000:]}")
    with open(result) as f:
      return json.load(f)


__all__ = [
  "SUPPORTED",
  "TimmSpec",
  "UnsupportedForTimm",
  "export_onnx",
  "from_timm",
  "hub_config",
  "model_card",
  "read_safetensors",
  "timm_spec",
  "to_timm",
  "write",
  "write_safetensors",
]
