"""Encoders for PyTorch (`python -m sslax.export --format timm|onnx`): the safetensors load into
timm's models with a strict load_state_dict, in a process without jax, flax or sslax, and
compute sslax's features to 1e-4 (max abs, float32); the ONNX graph does the same in
onnxruntime alone at two batch sizes; `sslax.load_encoder` reads the export back."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from testkit.configs import tiny_config
from testkit.torch_twin import (
  NO_JAX,
  fake_run,
  random_variables,
  run_isolated,
  torchvision_stub_path,
)

from sslax import export, export_timm, models
from sslax.data import augment

TOL = 1e-4  # max abs difference, float32

# Loads each export twice, by hand (config.json + strict load_state_dict) and with timm's
# folder loader, and runs both on the case's preprocessed NCHW inputs.
_RUN_TIMM = """
    import json, os
    import numpy as np
    import safetensors.torch
    import timm
    import torch

    cases = json.load(open(sys.argv[2]))
    out, data_configs = {}, {}
    for name, case in cases.items():
      cfg = json.load(open(os.path.join(case["dir"], "config.json")))
      model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"]).eval()
      model.load_state_dict(
        safetensors.torch.load_file(os.path.join(case["dir"], "model.safetensors")), strict=True
      )
      hub = timm.create_model("local-dir:" + case["dir"], pretrained=True).eval()
      x = torch.from_numpy(np.load(case["inputs"]))
      with torch.no_grad():
        out[name], out[name + ".hub"] = model(x).numpy(), hub(x).numpy()
      data = timm.data.resolve_data_config({}, model=hub)
      data_configs[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
    np.savez(sys.argv[3], **out)
    json.dump(data_configs, open(sys.argv[4], "w"))
    assert_not_imported()
    """

_RUN_ONNX = """
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
    (name,), x = [i.name for i in session.get_inputs()], np.load(sys.argv[3])
    np.savez(sys.argv[4], **{f"b{n}": session.run(["features"], {name: x[:n]})[0] for n in (2, 3)})
    assert_not_imported()
    """


def _json(path: str):
  with open(path) as f:
    return json.load(f)


def _model(**kwargs) -> ml_collections.ConfigDict:
  model = tiny_config().model
  model.update(kwargs)
  return model


def _init(model, size: int, seed: int = 0):
  backbone = models.make_backbone(model)
  return backbone, random_variables(backbone, size, seed=seed)


def _raw_images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def _case(tmp, name, backbone, variables, preprocessing, raw, export_dir):
  """Inputs (preprocessed, NCHW) and sslax's features for them."""
  x = np.asarray(export.preprocess(raw, preprocessing))
  features = np.asarray(jax.jit(lambda v, x: backbone.apply(v, x, train=False))(variables, x))
  inputs = os.path.join(tmp, f"{name}_inputs.npy")
  np.save(inputs, x.transpose(0, 3, 1, 2))
  return {"dir": export_dir, "inputs": inputs, "features": features, "raw": raw}


def _export(out, model, variables, preprocessing, fmt="timm"):
  export.export_encoder(
    out,
    fmt,
    model=model.to_dict(),
    dtype="float32",
    variables=variables,
    preprocessing=preprocessing,
    source={"method": "simclr", "dataset": "fake", "step": 0},
  )
  return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A run (ResNet-10, ImageNet stem, 32 px, ImageNet normalisation, crop 0.875) with random
  non-trivial weights and one evaluation record, exported by the CLI as onnx (timm files too)."""
  tmp = tmp_path_factory.mktemp("run")
  config = tiny_config()
  config.model.update(depth=10, width=1.0, stem="imagenet")
  config.dataset.image_size = 32
  config.augment.normalize = "imagenet"
  config.eval.crop_fraction = 0.875
  backbone, variables = _init(config.model, 32, seed=1)
  record = {
    "protocol": "report",
    "step": 7,
    "method": "simclr",
    "dataset": "fake",
    "results": {"pretrained": {"knn_top1_k20": 0.5, "linear_top1": 0.625, "feature_dim": 512}},
  }
  workdir = fake_run(str(tmp / "workdir"), config, variables, 7, [record])
  out = str(tmp / "export")
  args = ["--workdir", workdir, "--out", out, "--format", "onnx", "--license", "apache-2.0"]
  assert export.main(args) == 0
  return {"out": out, "backbone": backbone, "variables": variables, "config": config}


@pytest.fixture(scope="module")
def cases(tmp_path_factory, run_dir):
  tmp = str(tmp_path_factory.mktemp("cases"))
  found = {}

  # ResNet-50 at 224 px (timm's resnet50), batch 2.
  model = _model(name="resnet", depth=50, width=1.0, stem="imagenet")
  backbone, variables = _init(model, 224)
  pre = export.preprocessing_spec(224, 3, normalize="imagenet", crop_fraction=0.875)
  out = _export(os.path.join(tmp, "resnet50"), model, variables, pre)
  found["resnet50"] = _case(
    tmp, "resnet50", backbone, variables, pre, _raw_images(2, 240, 256), out
  )

  # ViT-S/16 at 224 px, learned position embeddings with the class token's own (timm's
  # vit_small_patch16_224 layout), class-token pooling.
  model = _model(name="vit", variant="S", patch_size=16, posemb="learn", pool="cls")
  backbone, variables = _init(model, 224)
  pre = export.preprocessing_spec(224, 3)
  out = _export(os.path.join(tmp, "vit_s16"), model, variables, pre)
  found["vit_s16"] = _case(tmp, "vit_s16", backbone, variables, pre, _raw_images(2, 224, 224), out)

  # Small ViTs with the other layouts: sin-cos table (class token without position) and mean
  # pooling; no class token, scanned blocks; patch 4 with an mlp ratio that is not an integer.
  small = {"name": "vit", "variant": "custom", "hidden_size": 64, "num_layers": 2, "num_heads": 4}
  for name, kwargs in {
    "vit_sincos_gap": {"posemb": "sincos2d", "pool": "gap", "patch_size": 8},
    "vit_nocls_scan": {"class_token": False, "pool": "gap", "scan": True, "patch_size": 8},
    "vit_p4_mlp": {"patch_size": 4, "mlp_dim": 100},
  }.items():
    model = _model(**small, **kwargs)
    backbone, variables = _init(model, 32, seed=2)
    pre = export.preprocessing_spec(32, 3)
    out = _export(os.path.join(tmp, name), model, variables, pre)
    found[name] = _case(tmp, name, backbone, variables, pre, _raw_images(3, 32, 32), out)

  # The CLI's onnx export of the run (its preprocessing is the run's: crop 0.875, imagenet).
  spec = _json(os.path.join(run_dir["out"], "encoder.json"))
  found["run"] = _case(
    tmp,
    "run",
    run_dir["backbone"],
    run_dir["variables"],
    spec["preprocessing"],
    _raw_images(3, 40, 36),
    run_dir["out"],
  )
  return tmp, found


@pytest.fixture(scope="module")
def timm_outputs(cases, tmp_path_factory):
  tmp, found = cases
  spec_path = os.path.join(tmp, "cases.json")
  with open(spec_path, "w") as f:
    json.dump({k: {"dir": c["dir"], "inputs": c["inputs"]} for k, c in found.items()}, f)
  outputs, data_configs = os.path.join(tmp, "timm.npz"), os.path.join(tmp, "data_configs.json")
  run_isolated(
    _RUN_TIMM,
    NO_JAX,
    spec_path,
    outputs,
    data_configs,
    pythonpath=torchvision_stub_path(tmp_path_factory.mktemp("stub")),
  )
  with np.load(outputs) as got:
    return {k: got[k] for k in got.files}, _json(data_configs)


@pytest.mark.parametrize(
  "name", ["resnet50", "vit_s16", "vit_sincos_gap", "vit_nocls_scan", "vit_p4_mlp", "run"]
)
def test_timm_model_computes_the_sslax_features(name, cases, timm_outputs):
  expected = cases[1][name]["features"]
  got, _ = timm_outputs
  assert got[name].shape == expected.shape
  assert np.abs(expected).max() > 0.1  # not a trivially small output
  np.testing.assert_allclose(got[name], expected, rtol=0, atol=TOL)
  np.testing.assert_array_equal(got[name + ".hub"], got[name])  # timm's folder loader: same


def test_timm_names_and_config(cases, timm_outputs):
  _, found = cases
  _, data_configs = timm_outputs
  hub = _json(os.path.join(found["resnet50"]["dir"], "config.json"))
  assert hub["architecture"] == "resnet50" and hub["model_args"] == {"num_classes": 0}
  assert hub["num_features"] == 2048
  vit = _json(os.path.join(found["vit_s16"]["dir"], "config.json"))
  assert vit["architecture"] == "vit_small_patch16_224"
  assert vit["model_args"]["no_embed_class"] is False  # the class token has its own position
  assert vit["model_args"]["global_pool"] == "token" and vit["model_args"]["fc_norm"] is False
  sincos = _json(os.path.join(found["vit_sincos_gap"]["dir"], "config.json"))
  assert sincos["model_args"]["no_embed_class"] is True
  assert sincos["model_args"]["global_pool"] == "avg"
  # What timm's data pipeline resolves from config.json: sslax's evaluation preprocessing.
  mean, std = augment.NORMALIZATIONS["imagenet"]
  assert data_configs["resnet50"] == {
    "input_size": [3, 224, 224],
    "interpolation": "bilinear",
    "mean": pytest.approx(list(mean)),
    "std": pytest.approx(list(std)),
    "crop_pct": 0.875,
    "crop_mode": "center",
  }
  assert data_configs["vit_s16"]["mean"] == [0.0] * 3 and data_configs["vit_s16"]["crop_pct"] == 1
  tensors, _ = export_timm.read_safetensors(
    os.path.join(found["vit_s16"]["dir"], "model.safetensors")
  )
  assert tensors["blocks.0.attn.qkv.weight"].shape == (3 * 384, 384)
  assert tensors["pos_embed"].shape == (1, 1 + 14 * 14, 384)
  assert sum(t.size for t in tensors.values()) == 21_665_664  # timm's ViT-S/16 without a head


def test_onnx_runs_in_onnxruntime_alone(cases, tmp_path):
  _, found = cases
  run = found["run"]
  out = tmp_path / "onnx.npz"
  run_isolated(
    _RUN_ONNX,
    NO_JAX + ("torch", "timm"),
    os.path.join(run["dir"], "model.onnx"),
    run["inputs"],
    out,
  )
  with np.load(out) as got:  # two batch sizes through the dynamic batch axis
    np.testing.assert_allclose(got["b2"], run["features"][:2], rtol=0, atol=TOL)
    np.testing.assert_allclose(got["b3"], run["features"][:3], rtol=0, atol=TOL)
  spec = _json(os.path.join(run["dir"], "encoder.json"))
  checked = spec["timm"]["onnx"]  # the export's own check against sslax on random inputs
  assert max(v for k, v in checked.items() if k.endswith("max_abs_diff")) < TOL


def test_model_card_and_spec(run_dir):
  out = run_dir["out"]
  with open(os.path.join(out, "README.md")) as f:
    card = f.read()
  assert card.startswith("---\nlicense: apache-2.0\nlibrary_name: timm\n")
  for text in ("| method | simclr |", "| training data | fake |", "| training steps | 7 |"):
    assert text in card
  assert "| report | 7 | pretrained | linear_top1 | 62.50% |" in card
  assert "python -m sslax.export --workdir" in card and "--format onnx" in card
  assert '"normalize": "imagenet"' in card  # the training config
  assert "onnxruntime.InferenceSession" in card
  spec = _json(os.path.join(out, "encoder.json"))
  assert spec["format"] == "onnx" and spec["input_shape"] == ["batch", 3, 32, 32]
  assert spec["timm"]["architecture"] == "resnet18"
  assert spec["timm"]["model_args"] == {"layers": [1, 1, 1, 1], "num_classes": 0}
  hub = _json(os.path.join(out, "config.json"))
  assert hub["pretrained_cfg"]["license"] == "apache-2.0"
  assert hub["pretrained_cfg"]["crop_pct"] == 0.875


def test_load_encoder_reads_the_export_back(cases):
  _, found = cases
  for name in ("run", "vit_nocls_scan"):
    case = found[name]
    encoder = export.load_encoder(case["dir"])
    np.testing.assert_allclose(encoder(case["raw"]), case["features"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
  "kwargs",
  [
    {"name": "resnet", "depth": 10, "width": 1.0, "stem": "imagenet"},
    {"name": "resnet", "depth": 50, "width": 1.0, "stem": "imagenet"},
    {
      "name": "vit",
      "variant": "custom",
      "hidden_size": 32,
      "num_layers": 2,
      "num_heads": 2,
      "patch_size": 8,
    },
    {
      "name": "vit",
      "variant": "custom",
      "hidden_size": 32,
      "num_layers": 3,
      "num_heads": 2,
      "patch_size": 8,
      "scan": True,
      "posemb": "sincos2d",
    },
  ],
)
def test_mapping_round_trip_is_exact(kwargs):
  model = _model(**kwargs)
  backbone, variables = _init(model, 32)
  _, state = export_timm.to_timm(backbone, variables, 32, 3)
  back = export_timm.from_timm(backbone, state, 32, 3)
  jax.tree.map(np.testing.assert_array_equal, back, jax.device_get(variables))


def test_unsupported_backbones_fail_clearly(tmp_path):
  for kwargs, reason in [
    ({"name": "resnet", "depth": 18, "width": 1.0, "stem": "small"}, "stem='small'"),
    ({"name": "resnet", "depth": 18, "width": 0.5, "stem": "imagenet"}, "width=0.5"),
  ]:
    model = _model(**kwargs)
    _backbone, variables = _init(model, 32)
    out = tmp_path / "out"
    with pytest.raises(export_timm.UnsupportedForTimm, match=reason) as e:
      _export(str(out), model, variables, export.preprocessing_spec(32, 3))
    assert "Supported: ResNet-10/18/34/50/101 with stem='imagenet'" in str(e.value)
    assert not out.exists()  # nothing written


def test_safetensors_files_read_with_the_reference_reader(tmp_path):
  safetensors_numpy = pytest.importorskip("safetensors.numpy")
  tensors = {
    "b.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
    "a.num_batches_tracked": np.zeros((), np.int64),
    "c": np.ones((2, 1, 3), np.float32) * -1.5,
  }
  path = str(tmp_path / "t.safetensors")
  export_timm.write_safetensors(path, tensors, metadata={"format": "pt"})
  with open(path, "rb") as f:
    header_len = int.from_bytes(f.read(8), "little")
  assert (8 + header_len) % 8 == 0
  got = safetensors_numpy.load_file(path)
  ours, metadata = export_timm.read_safetensors(path)
  assert metadata == {"format": "pt"}
  for name, value in tensors.items():
    np.testing.assert_array_equal(got[name], value)
    np.testing.assert_array_equal(ours[name], value)
    assert got[name].dtype == value.dtype and got[name].shape == value.shape


def test_preprocess_matches_center_view_with_crop_and_normalisation():
  spec = export.preprocessing_spec(24, 3, normalize="imagenet", crop_fraction=0.875)
  for shape in ((2, 40, 30, 3), (2, 27, 27, 3), (2, 20, 64, 3)):
    raw = _raw_images(*shape)
    expected = np.stack([augment.center_view(im, 24, 0.875, "imagenet").numpy() for im in raw])
    np.testing.assert_allclose(np.asarray(export.preprocess(raw, spec)), expected, atol=1e-5)


@pytest.mark.slow
def test_trained_run_exports_to_timm_and_onnx(tmp_path, tmp_path_factory):
  """A real short run (ResNet-10, ImageNet stem, 32 px) through the CLI, then timm and
  onnxruntime without jax."""
  from sslax import evaluate, main
  from sslax import workdir as workdir_lib

  config = tiny_config()
  config.model.update(depth=10, width=1.0, stem="imagenet")
  config.dataset.image_size = 32
  workdir, out = str(tmp_path / "run"), str(tmp_path / "export")
  main.train_and_evaluate(config, workdir)
  assert export.main(["--workdir", workdir, "--out", out, "--format", "onnx"]) == 0
  enc = evaluate.restore_encoder(workdir_lib.load_config(workdir), workdir)
  raw = _raw_images(3, 32, 32)
  spec = _json(os.path.join(out, "encoder.json"))
  x = np.asarray(export.preprocess(raw, spec["preprocessing"]))
  expected = np.asarray(enc.module.apply(jax.device_get(enc.variables), x, train=False))
  np.save(tmp_path / "x.npy", x.transpose(0, 3, 1, 2))
  with open(tmp_path / "cases.json", "w") as f:
    json.dump({"run": {"dir": out, "inputs": str(tmp_path / "x.npy")}}, f)
  run_isolated(
    _RUN_TIMM,
    NO_JAX,
    tmp_path / "cases.json",
    tmp_path / "timm.npz",
    tmp_path / "data.json",
    pythonpath=torchvision_stub_path(tmp_path),
  )
  run_isolated(
    _RUN_ONNX,
    NO_JAX + ("torch", "timm"),
    os.path.join(out, "model.onnx"),
    tmp_path / "x.npy",
    tmp_path / "onnx.npz",
  )
  with np.load(tmp_path / "timm.npz") as got:
    np.testing.assert_allclose(got["run"], expected, rtol=0, atol=TOL)
  with np.load(tmp_path / "onnx.npz") as got:
    np.testing.assert_allclose(got["b2"], expected[:2], rtol=0, atol=TOL)
    np.testing.assert_allclose(got["b3"], expected, rtol=0, atol=TOL)


@pytest.mark.slow
def test_vit_s16_onnx(tmp_path):
  model = _model(name="vit", variant="S", patch_size=16)
  backbone, variables = _init(model, 224)
  pre = export.preprocessing_spec(224, 3, normalize="imagenet")
  spec = export.export_encoder(
    str(tmp_path),
    "onnx",
    model=model.to_dict(),
    dtype="float32",
    variables=variables,
    preprocessing=pre,
  )
  x = np.asarray(export.preprocess(_raw_images(3, 224, 224), pre))
  expected = np.asarray(backbone.apply(variables, x, train=False))
  np.save(tmp_path / "x.npy", x.transpose(0, 3, 1, 2))
  run_isolated(
    _RUN_ONNX,
    NO_JAX + ("torch", "timm"),
    tmp_path / "model.onnx",
    tmp_path / "x.npy",
    tmp_path / "onnx.npz",
  )
  with np.load(tmp_path / "onnx.npz") as got:
    np.testing.assert_allclose(got["b2"], expected[:2], rtol=0, atol=TOL)
    np.testing.assert_allclose(got["b3"], expected, rtol=0, atol=TOL)
  assert spec["timm"]["onnx"]["onnxruntime_batch3_max_abs_diff"] < TOL
