"""`python -m sslax.evaluate` on a real tiny checkpoint: config rebuilt from config.json, records in
results.json, cached features reused, low-shot subsets saved, pictures drawn, zero_shot refused."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from testkit.configs import tiny_config
from testkit.evaluation import fresh_copy, trained_workdir
from sslax import evaluate, features, workdir as workdir_lib
from sslax.data import sources
from sslax.evaluation import pictures

FAST = ["eval.linear_epochs=3"]


@pytest.fixture
def workdir(tmp_path_factory, tmp_path, devices):
  return fresh_copy(trained_workdir(tmp_path_factory), tmp_path)


def _count_extractions(monkeypatch):
  calls = []
  real = features.extract_features

  def counting(*args, **kwargs):
    calls.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(features, "extract_features", counting)
  return calls


def test_config_is_rebuilt_from_config_json(workdir):
  config = workdir_lib.load_config(workdir)
  assert config.to_dict() == tiny_config().to_dict()
  assert isinstance(config.eval.knn_ks, tuple) and isinstance(config.augment.crop_scale, tuple)
  config = workdir_lib.load_config(workdir, ["--config.eval.knn_ks=5,50", "eval.knn_temperature=1"])
  assert config.eval.knn_ks == (5, 50) and config.eval.knn_temperature == 1.0
  with pytest.raises(ValueError, match="eval.knn_k"):
    workdir_lib.load_config(workdir, ["eval.knn_k=5"])


def test_records_are_appended_and_features_cached(workdir, monkeypatch):
  calls = _count_extractions(monkeypatch)
  first = evaluate.evaluate(workdir, "knn", overrides=["eval.knn_ks=(1, 5)"])
  assert len(calls) == 2  # train + test, once
  cache = [workdir_lib.feature_cache_path(workdir, 4, s) for s in ("train", "test")]
  assert all(os.path.exists(p) for p in cache)
  mtimes = [os.path.getmtime(p) for p in cache]
  second = evaluate.evaluate(workdir, "linear", overrides=FAST)
  third = evaluate.evaluate(workdir, "retrieval")
  assert len(calls) == 2  # cache hits: no recompute
  assert [os.path.getmtime(p) for p in cache] == mtimes
  with np.load(cache[1], allow_pickle=False) as f:
    assert f["features"].shape == (256, 64) and f["labels"].shape == (256,)

  results = json.loads(open(os.path.join(workdir, "results.json")).read())
  assert results["schema_version"] == 2
  records = results["evaluations"]
  assert results == workdir_lib.read_results(workdir)
  assert [r["protocol"] for r in records] == ["knn", "linear", "retrieval"]
  for r in records:
    assert r["step"] == 4 and r["timestamp"] and r["config"]["model"]["depth"] == 10
    assert list(r["results"]) == ["pretrained"]  # eval.baselines adds none to these protocols
  assert set(records[0]["results"]["pretrained"]) == {"knn_top1_k1", "knn_top1_k5", "feature_dim"}
  assert records[0]["config"]["eval"]["knn_ks"] == [1, 5]
  linear = records[1]["results"]["pretrained"]
  assert 0 <= linear["test_accuracy"] == linear["linear_top1"] <= 1
  retrieval = records[2]["results"]["pretrained"]
  assert 0 < retrieval["mAP"] <= 1 and "precision@10" in retrieval
  assert first == records[0] and second["protocol"] == "linear" and third["step"] == 4

  # A different train subset changes what is cached: recomputed, not silently reused.
  evaluate.evaluate(workdir, "knn", overrides=["eval.num_train_examples=32"])
  assert len(calls) == 3
  with np.load(cache[0], allow_pickle=False) as f:
    assert f["features"].shape[0] == 32


def test_cli_flags_closed_form_and_zero_shot(workdir, capsys):
  args = ["--workdir", workdir, "--protocol"]
  assert (
    evaluate.main(
      args + ["linear", "--solver", "closed_form", "--config.eval.ridge_l2_grid=(0.1,)"]
    )
    == 0
  )
  assert evaluate.main(args + ["knn", "--k", "3", "--temperature", "0.5"]) == 0
  out = capsys.readouterr().out
  assert '"knn_top1_k3"' in out
  records = workdir_lib.read_results(workdir)["evaluations"]
  linear = records[0]["results"]["pretrained"]
  assert linear["optimizer"] == "closed_form" and linear["l2"] == 0.1
  assert records[1]["config"]["eval"]["knn_temperature"] == 0.5

  assert evaluate.main(args + ["zero_shot"]) == 2
  assert "image-text" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    evaluate.main(args + ["knn", "--bogus"])
  assert evaluate.main(["--workdir", os.path.dirname(workdir), "--protocol", "knn"]) == 2
  assert "config.json" in capsys.readouterr().err


def test_lowshot_saves_balanced_subsets_and_reports_top1(workdir):
  overrides = ["eval.finetune_epochs=1", "eval.finetune_batch_size=32"]
  record = evaluate.evaluate(
    workdir, "lowshot", overrides=overrides + ["eval.lowshot_fractions=(0.1, 0.25)"]
  )
  res = record["results"]["pretrained"]
  assert set(res) == {"10pct", "25pct"}
  labels = np.asarray(sources.load_source(workdir_lib.load_config(workdir), "train").labels)
  for name, fraction in (("10pct", 0.1), ("25pct", 0.25)):
    assert 0 <= res[name]["top1"] <= 1 and res[name]["steps"] >= 1
    saved = json.loads(open(res[name]["subset_file"]).read())
    assert saved["fraction"] == fraction and saved["seed"] == 0
    counts = np.bincount(labels[saved["ids"]], minlength=10)
    assert counts.tolist() == saved["per_class"]
    full = np.bincount(labels, minlength=10)
    assert np.all(counts >= np.floor(fraction * full)) and np.all(
      counts <= np.ceil(fraction * full)
    )
  # Same seed, same subset: a second run writes identical ids.
  first = json.loads(open(res["10pct"]["subset_file"]).read())["ids"]
  evaluate.evaluate(workdir, "lowshot", overrides=overrides + ["eval.lowshot_fractions=(0.1,)"])
  assert json.loads(open(res["10pct"]["subset_file"]).read())["ids"] == first


def test_pictures_are_written_with_expected_sizes(workdir):
  record = evaluate.evaluate(workdir, "pictures")
  files = record["results"]["pretrained"]["files"]
  cell = pictures.cell_size(16)
  assert cell == 64
  expected = {
    "augmentations": pictures.grid_size(8, 3, cell),  # 8 images: centre + 2 views
    "embedding": (512, 512),
    "retrieval": pictures.grid_size(6, 9, cell),
  }  # 6 queries: query + top 8
  assert expected["augmentations"] == (3 * 64 + 4 * 4, 8 * 64 + 9 * 4)
  for name, size in expected.items():
    assert os.path.dirname(files[name]) == os.path.join(workdir, "pictures")
    image = Image.open(files[name])
    assert image.format == "PNG" and image.size == size, (name, image.size)
    pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 5, name  # not blank


def test_augmentation_grid_of_grey_images_and_multi_crop(tmp_path):
  from sslax.data.augment import ViewSpec

  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, size=(28, 28, 1), dtype=np.uint8) for _ in range(3)]
  views = (ViewSpec(size=28), ViewSpec(size=28), ViewSpec(size=12, crop_scale=(0.05, 0.4)))
  path = str(tmp_path / "grid.png")
  size = pictures.augmentation_grid(images, views, path)
  assert (
    size == pictures.grid_size(3, 4, pictures.cell_size(28)) == (4 * 84 + 5 * 4, 3 * 84 + 4 * 4)
  )
  image = Image.open(path)
  assert image.size == size
  assert np.asarray(image.convert("L")).std() > 10


def test_incomplete_or_mismatched_workdirs_give_clear_errors(workdir, tmp_path):
  # config.json but no checkpoint (a run that died before its first save).
  empty = tmp_path / "no_ckpt"
  empty.mkdir()
  shutil.copy(os.path.join(workdir, "config.json"), empty / "config.json")
  with pytest.raises(FileNotFoundError, match="No checkpoint in .* train first"):
    evaluate.restore_encoder(workdir_lib.load_config(str(empty)), str(empty))
  # A model override that does not match the checkpoint's architecture.
  config = workdir_lib.load_config(workdir, ["model.width=0.25"])
  with pytest.raises(ValueError, match="does not match the config's model.*drop --config.model"):
    evaluate.restore_encoder(config, workdir)
