"""Export a trained encoder: python -m sslax.export --workdir DIR --out PATH --format FORMAT.

The bundle, stablehlo and savedmodel formats take raw images, uint8 [B, H, W, C], and return
features float32 [B, D]: the evaluation preprocessing (`sslax.data.augment.center_view` with the
run's eval.crop_fraction and augment.normalize: centre crop, bilinear resize with half-pixel
centres, scale to [0, 1], then (x - mean) / std) is part of the exported function. Every format
records it in PATH/encoder.json.

  bundle      PATH/params.msgpack (backbone params + BatchNorm statistics, flax msgpack, no
              pickle) and PATH/encoder.json (model config, preprocessing). Needs sslax:
              `sslax.load_encoder(PATH)` -> callable, any image size.
  stablehlo   PATH/encoder.jax_exported: a serialized `jax.export.Exported` with a symbolic
              batch size, lowered for --platforms (default cpu and cuda), weights inside. Needs
              only jax: `jax.export.deserialize(open(f, "rb").read()).call(images)`.
  savedmodel  PATH is a TF SavedModel (jax2tf, weights as variables) whose "serving_default"
              signature takes {"images": uint8 [B, H, W, C]} and returns {"features"}. Needs
              only TensorFlow.
  timm        For PyTorch: PATH/model.safetensors (timm's parameter names and layouts),
              PATH/config.json (timm's hub config: architecture, model_args, preprocessing) and
              a model card PATH/README.md. Needs only timm:
              `timm.create_model("local-dir:PATH", pretrained=True)`. Input: float32
              [B, C, S, S], preprocessed as config.json says (see sslax/export_timm.py).
  onnx        The timm files plus PATH/model.onnx (input "pixel_values" float32 [batch, C, S, S],
              output "features"), exported from the timm twin and checked in onnxruntime. Needs
              the export extra (`pip install "sslax[export]"`) to export, only onnxruntime to run.

stablehlo and savedmodel fix H = W = --input_size (default: the training image size); timm and
onnx take the training image size. `sslax.load_encoder(PATH)` loads every format (timm and onnx
through the safetensors, into the sslax backbone).

The run's config is DIR/config.json (`sslax.workdir.load_config`), with --config.key=value
overrides in the grammar of `python -m sslax.main` and `sslax.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
import jax.numpy as jnp
import numpy as np

FORMATS = ("bundle", "stablehlo", "savedmodel", "timm", "onnx")
TIMM_FORMATS = ("timm", "onnx")
SPEC_FILE = "encoder.json"
PARAMS_FILE = "params.msgpack"
EXPORTED_FILE = "encoder.jax_exported"
FORMAT_VERSION = 1


def preprocessing_spec(
  image_size: int, channels: int, *, normalize: str = "none", crop_fraction: float = 1.0
) -> dict:
  """What the evaluation pipeline does to a raw image before the backbone (`center_view` with
  the run's config.eval.crop_fraction and config.augment.normalize)."""
  mean, std = [0.0] * int(channels), [1.0] * int(channels)
  if normalize != "none":
    from sslax.data import augment  # local: TensorFlow only when exporting, not when loading

    stats = augment.NORMALIZATIONS.get(normalize)
    if stats is None:
      raise ValueError(f"Unknown normalize {normalize!r}; one of {tuple(augment.NORMALIZATIONS)}")
    if len(stats[0]) != channels:
      raise ValueError(f"normalize={normalize!r} has statistics for {len(stats[0])} channels")
    mean, std = [float(m) for m in stats[0]], [float(s) for s in stats[1]]
  if not 0 < crop_fraction <= 1:
    raise ValueError(f"crop_fraction={crop_fraction} must be in (0, 1]")
  return {
    "input_dtype": "uint8",
    "layout": "NHWC",
    "channels": int(channels),
    "crop": (
      "central_square"
      if crop_fraction == 1
      else "shorter side to round(image_size / crop_fraction), central image_size square"
    ),
    "crop_fraction": float(crop_fraction),
    "image_size": int(image_size),
    "resize": "bilinear, half-pixel centres, antialiased when shrinking only if crop_fraction < 1 "
    "(tf.image.resize)",
    "scale": 1.0 / 255.0,
    "normalize": normalize,
    "mean": mean,
    "std": std,
  }


def preprocess(images, spec: dict) -> jax.Array:
  """Raw images uint8 [B, H, W, C] -> float32 [B, S, S, C], as `augment.center_view` + scaling."""
  x = jnp.asarray(images)
  channels, size = spec["channels"], spec["image_size"]
  crop_fraction = spec.get("crop_fraction", 1.0)
  if x.ndim != 4 or x.shape[-1] != channels:
    raise ValueError(f"expected raw images [batch, height, width, {channels}], got shape {x.shape}")
  h, w = x.shape[1], x.shape[2]
  if crop_fraction == 1:
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    # Cast then multiply by 1/255, exactly as tf.image.convert_image_dtype does.
    x = x[:, top : top + side, left : left + side, :].astype(jnp.float32)
    x = x * np.float32(spec["scale"])
    if side != size:
      x = jax.vmap(
        lambda im: jax.image.resize(im, (size, size, channels), "linear", antialias=False)
      )(x)
  else:
    # torchvision's Resize(round(size / f)) + CenterCrop(size), as center_view: the shorter side
    # to `short`, the longer to floor of the same scale, antialiased; offsets rounded half-even.
    short = round(size / crop_fraction)
    new_h, new_w = (short, short * w // h) if h <= w else (short * h // w, short)
    x = x.astype(jnp.float32) * np.float32(spec["scale"])
    x = jax.vmap(
      lambda im: jax.image.resize(im, (new_h, new_w, channels), "linear", antialias=True)
    )(x)
    top, left = round((new_h - size) / 2), round((new_w - size) / 2)
    x = x[:, top : top + size, left : left + size, :]
  mean, std = np.asarray(spec["mean"], np.float32), np.asarray(spec["std"], np.float32)
  if np.any(mean != 0) or np.any(std != 1):
    x = (x - mean) / std
  return x


def _encode_fn(backbone, spec: dict):
  """(variables, raw images) -> features [B, D]."""
  return lambda variables, images: backbone.apply(variables, preprocess(images, spec), train=False)


def infer_channels(backbone, variables, image_size: int) -> int:
  """The input channel count the params were trained on (tries 3, 1, 4 with shapes only)."""
  for c in (3, 1, 4):
    try:
      jax.eval_shape(
        lambda v, x: backbone.apply(v, x, train=False),
        variables,
        jax.ShapeDtypeStruct((1, image_size, image_size, c), jnp.float32),
      )
      return c
    except Exception:  # noqa: BLE001 -- a shape mismatch raises whatever the module raises
      continue
  raise ValueError("Could not infer the encoder's input channels; pass channels explicitly.")


def export_encoder(
  out: str,
  fmt: str,
  *,
  model: dict,
  dtype: str,
  variables: dict,
  preprocessing: dict,
  input_size: int | None = None,
  platforms: Sequence[str] = ("cpu", "cuda"),
  source: dict | None = None,
  run_config: dict | None = None,
  evaluations: Sequence[dict] = (),
  command: str | None = None,
  license: str = "unknown",
) -> dict:
  """Writes the encoder `variables` (of the backbone built from `model`) in format `fmt` to `out`.

  timm and onnx only: run_config (the run's config as JSON), evaluations (its results.json
  records), command and license go into the model card (out/README.md) and config.json.
  Returns the spec written to out/encoder.json.
  """
  import ml_collections
  from sslax import __version__, models  # local: see `export`

  if fmt not in FORMATS:
    raise ValueError(f"Unknown export format {fmt!r}; choose one of {FORMATS}.")
  # The attention kernel is how training ran, not part of the model: an encoder trained with
  # cuDNN's attention exports (and loads, on any platform) with XLA's, the same function.
  model = {**model, "attention": "xla"} if "attention" in model else dict(model)
  backbone = models.make_backbone(ml_collections.ConfigDict(model), dtype)
  variables = jax.device_get(variables)
  encode = _encode_fn(backbone, preprocessing)
  size = int(input_size or preprocessing["image_size"])
  channels = preprocessing["channels"]
  feature_dim = int(
    jax.eval_shape(
      encode, variables, jax.ShapeDtypeStruct((1, size, size, channels), jnp.uint8)
    ).shape[-1]
  )
  if fmt in TIMM_FORMATS:  # unsupported backbones fail before anything is written
    from sslax import export_timm  # local: as above

    size = int(preprocessing["image_size"])
    export_timm.timm_spec(backbone, variables, size, channels)
  spec = {
    "format": fmt,
    "format_version": FORMAT_VERSION,
    "sslax_version": __version__,
    "model": dict(model),
    "dtype": dtype,
    "feature_dim": feature_dim,
    "preprocessing": preprocessing,
    "source": source or {},
  }
  os.makedirs(out, exist_ok=True)
  if fmt == "bundle":
    from flax import serialization

    with open(os.path.join(out, PARAMS_FILE), "wb") as f:
      f.write(serialization.msgpack_serialize(variables))
    spec["input_shape"] = ["batch", "height", "width", channels]
  elif fmt == "stablehlo":
    batch = jax.export.symbolic_shape("batch")[0]
    exported = jax.export.export(
      jax.jit(lambda images: encode(variables, images)), platforms=tuple(platforms)
    )(jax.ShapeDtypeStruct((batch, size, size, channels), jnp.uint8))
    with open(os.path.join(out, EXPORTED_FILE), "wb") as f:
      f.write(exported.serialize())
    spec.update(input_shape=["batch", size, size, channels], platforms=list(platforms))
  elif fmt in TIMM_FORMATS:
    spec["timm"] = export_timm.write(
      out,
      backbone=backbone,
      variables=variables,
      preprocessing=preprocessing,
      sslax_spec=spec,
      run_config=run_config,
      evaluations=evaluations,
      command=command,
      license=license,
      onnx=fmt == "onnx",
    )
    spec.update(
      input_shape=["batch", channels, size, size],
      input_layout="NCHW float32, preprocessed as config.json's pretrained_cfg",
    )
  else:
    _save_tf(out, encode, variables, size, channels, platforms)
    spec.update(
      input_shape=["batch", size, size, channels],
      platforms=list(platforms),
      signature="serving_default",
      input_name="images",
      output_name="features",
    )
  with open(os.path.join(out, SPEC_FILE), "w") as f:
    json.dump(spec, f, indent=2)
  return spec


def _save_tf(out: str, encode, variables, size: int, channels: int, platforms) -> None:
  import tensorflow as tf
  from jax.experimental import jax2tf

  tf_encode = jax2tf.convert(
    encode,
    polymorphic_shapes=[None, f"(b, {size}, {size}, {channels})"],
    with_gradient=False,
    native_serialization_platforms=tuple(platforms),
  )
  module = tf.Module()
  # Weights as variables (not constants in the graph), so large encoders stay under protobuf limits.
  module.weights = tf.nest.map_structure(lambda a: tf.Variable(a, trainable=False), variables)

  @tf.function(
    autograph=False,
    input_signature=[tf.TensorSpec([None, size, size, channels], tf.uint8, name="images")],
  )
  def serve(images):
    return {"features": tf_encode(module.weights, images)}

  module.serve = serve
  tf.saved_model.save(module, out, signatures={"serving_default": serve})


def export(
  workdir: str,
  out: str,
  fmt: str,
  *,
  config=None,
  input_size: int | None = None,
  platforms: Sequence[str] = ("cpu", "cuda"),
  overrides: Sequence[str] = (),
  command: str | None = None,
  license: str = "unknown",
) -> dict:
  """Exports the backbone of DIR's newest checkpoint.

  config: the run's ConfigDict (default: DIR/config.json via `sslax.workdir.load_config`, then
  `overrides`); its model must match the checkpoint's. command, license: for the model card of
  the timm and onnx formats.
  Returns the spec written to out/encoder.json.
  """
  # local: `sslax.load_encoder` imports this module and needs only jax (flax for bundles)
  from sslax import models, workdir as workdir_lib  # local: as above
  from sslax.evaluation import encoder as encoder_lib  # local: as above

  config = workdir_lib.load_config(workdir, overrides) if config is None else config
  tree, step = encoder_lib.load_checkpoint(workdir)
  variables = encoder_lib.backbone_variables(tree["params"], tree.get("batch_stats"))
  backbone = models.make_backbone(config.model, config.dtype)
  channels = encoder_lib.check_matches_config(backbone, variables, config, workdir, step)
  size = config.dataset.image_size
  spec = preprocessing_spec(
    size,
    channels,
    normalize=config.get("augment", {}).get("normalize", "none"),
    crop_fraction=config.get("eval", {}).get("crop_fraction", 1.0),
  )
  evaluations = [
    r for r in workdir_lib.read_results(workdir)["evaluations"] if r.get("step") == step
  ]
  spec = export_encoder(
    out,
    fmt,
    model=config.model.to_dict(),
    dtype=config.dtype,
    variables=variables,
    preprocessing=spec,
    input_size=input_size,
    platforms=platforms,
    source={
      "workdir": os.path.abspath(workdir),
      "step": step,
      "method": config.method,
      "dataset": config.dataset.name,
    },
    run_config=json.loads(config.to_json_best_effort()),
    evaluations=evaluations,
    command=command,
    license=license,
  )
  save_tokenizer(out, tree.get("method_state"))
  return spec


TOKENIZER_FILE = "tokenizer.json"


def save_tokenizer(out: str, method_state) -> str | None:
  """Image-text models (clip, siglip) keep their tokenizer's JSON spec in the checkpoint's
  method state; it goes beside the exported model as PATH/tokenizer.json (read it with
  `sslax.data.text.ByteTokenizer.from_json`). Returns the path, or None for other methods."""
  if not method_state or "tokenizer" not in method_state:
    return None
  path = os.path.join(out, TOKENIZER_FILE)
  with open(path, "w") as f:
    f.write(np.asarray(method_state["tokenizer"], np.uint8).tobytes().decode("utf-8"))
  return path


class LoadedEncoder:
  """Raw images uint8 [B, H, W, C] -> features float32 [B, D] (numpy in, numpy out)."""

  def __init__(self, fn, spec: dict):
    self._fn = fn
    self.spec = spec
    self.preprocessing = spec["preprocessing"]
    self.feature_dim = spec["feature_dim"]

  def __call__(self, images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
      raise ValueError(
        f"expected raw uint8 images, got dtype {images.dtype}; the encoder "
        f"applies its own preprocessing ({self.preprocessing['resize']}, scale 1/255)"
      )
    return np.asarray(self._fn(images), np.float32)


def load_encoder(path: str) -> LoadedEncoder:
  """Loads an exported encoder (any format) as raw uint8 images -> features, in jax (TF for a
  SavedModel); timm and onnx exports through their safetensors, mapped back to sslax's layout."""
  spec_path = os.path.join(path, SPEC_FILE)
  if not os.path.exists(spec_path):
    raise FileNotFoundError(
      f"{spec_path} not found: {path} is not an encoder exported with python -m sslax.export."
    )
  with open(spec_path) as f:
    spec = json.load(f)
  fmt = spec.get("format")
  if fmt == "bundle":
    import ml_collections
    from flax import serialization
    from sslax import models  # local: bundles only; the other formats need no flax

    backbone = models.make_backbone(ml_collections.ConfigDict(spec["model"]), spec["dtype"])
    with open(os.path.join(path, PARAMS_FILE), "rb") as f:
      variables = serialization.msgpack_restore(f.read())
    encode = jax.jit(_encode_fn(backbone, spec["preprocessing"]))
    return LoadedEncoder(lambda images: encode(variables, images), spec)
  if fmt == "stablehlo":
    with open(os.path.join(path, EXPORTED_FILE), "rb") as f:
      exported = jax.export.deserialize(bytearray(f.read()))
    return LoadedEncoder(exported.call, spec)
  if fmt in TIMM_FORMATS:
    import ml_collections
    from sslax import export_timm, models  # local: as for bundles

    backbone = models.make_backbone(ml_collections.ConfigDict(spec["model"]), spec["dtype"])
    state, _ = export_timm.read_safetensors(os.path.join(path, export_timm.SAFETENSORS_FILE))
    pre = spec["preprocessing"]
    variables = export_timm.from_timm(backbone, state, pre["image_size"], pre["channels"])
    encode = jax.jit(_encode_fn(backbone, pre))
    return LoadedEncoder(lambda images: encode(variables, images), spec)
  if fmt == "savedmodel":
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]
    return LoadedEncoder(lambda images: serve(images=tf.constant(images))["features"].numpy(), spec)
  raise ValueError(f"{spec_path}: unknown format {fmt!r}; expected one of {FORMATS}.")


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m sslax.export",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--workdir", required=True, help="A directory written by the trainer.")
  parser.add_argument("--out", required=True, help="Directory to write the encoder to.")
  parser.add_argument("--format", required=True, choices=FORMATS)
  parser.add_argument(
    "--input_size",
    type=int,
    default=None,
    help="stablehlo/savedmodel: side of the raw input images (default: the training image size).",
  )
  parser.add_argument(
    "--license",
    default="unknown",
    help="timm/onnx: the weights' licence for the model card and config.json (e.g. apache-2.0, "
    "cc-by-4.0; the training data's terms may limit it).",
  )
  parser.add_argument(
    "--platforms",
    default="cpu,cuda",
    help="stablehlo/savedmodel: comma-separated platforms to lower for (cpu, cuda, rocm, tpu).",
  )
  args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  bad = [a for a in overrides if not a.startswith("--config.")]
  if bad:
    parser.error(f"unrecognized arguments: {' '.join(bad)} (config keys go as --config.key=value)")
  from absl import logging

  logging.set_verbosity(logging.WARNING)
  try:
    spec = export(
      args.workdir,
      args.out,
      args.format,
      input_size=args.input_size,
      platforms=tuple(p for p in args.platforms.split(",") if p),
      overrides=overrides,
      command=" ".join(
        shlex.quote(a)
        for a in ["python", "-m", "sslax.export", *(sys.argv[1:] if argv is None else argv)]
      ),
      license=args.license,
    )
  except (OSError, ValueError, RuntimeError) as e:
    sys.stderr.write(f"error: {e}\n")
    return 2
  dtype = "float32, preprocessed" if args.format in TIMM_FORMATS else "uint8"
  print(
    f"Exported {args.format} encoder (features [batch, {spec['feature_dim']}], input "
    f"{spec['input_shape']} {dtype}) of step {spec['source']['step']} to {args.out}",
    flush=True,
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
