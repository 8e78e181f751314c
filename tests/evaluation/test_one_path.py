"""One evaluation path: the end-of-run report (live state), `sslax.main --mode evaluate` and
`python -m sslax.evaluate --protocol knn|linear` (checkpoint) give the same numbers and write
one results.json schema; workdirs that cannot be used fail with the fix; old runs still load."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from testkit.configs import tiny_config
from testkit.evaluation import fresh_copy, trained_workdir
from sslax import config as config_lib
from sslax import evaluate, main
from sslax import workdir as workdir_lib
from sslax.evaluation import protocols
from sslax.methods import METHODS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORD_KEYS = {
  "protocol",
  "step",
  "timestamp",
  "method",
  "dataset",
  "eval_seconds",
  "sslax_version",
  "config",
  "results",
}


def _main_cli(*args, timeout=300):
  return subprocess.run(
    [sys.executable, "-m", "sslax.main", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def _copy_without_evaluations(workdir, tmp_path, name):
  """A copy of the run with no cached features and no results: it computes everything anew."""
  dest = fresh_copy(workdir, tmp_path, name)
  shutil.rmtree(os.path.join(dest, "features"), ignore_errors=True)
  os.remove(os.path.join(dest, "results.json"))
  return dest


@pytest.mark.slow  # test budget (2026-11-30): ~150 s: three CLIs on one trained run
def test_report_main_evaluate_and_evaluate_cli_give_the_same_numbers(tmp_path, devices):
  config = tiny_config()
  config.eval.at_end = True
  config.eval.batch_size = 64
  config.eval.linear_epochs = 2
  trained = str(tmp_path / "trained")
  live = main.train_and_evaluate(config, trained)["results"]  # report of the live train state
  assert list(live["results"]) == ["pretrained", "random_init", "raw_pixels"]

  # sslax.main --mode evaluate (no --config: DIR/config.json) on a copy of the checkpoint.
  a = _copy_without_evaluations(trained, tmp_path, "a")
  r = _main_cli("--workdir", a, "--mode", "evaluate")
  assert r.returncode == 0, r.stderr[-3000:]
  (report,) = workdir_lib.read_results(a)["evaluations"]
  assert report["protocol"] == "report" and report["step"] == live["step"] == 4
  assert report["results"] == live["results"]  # every encoder, every number, bit for bit
  assert protocols.format_table(report) in r.stdout

  # python -m sslax.evaluate --protocol knn / linear on another copy.
  b = _copy_without_evaluations(trained, tmp_path, "b")
  assert evaluate.main(["--workdir", b, "--protocol", "knn"]) == 0
  assert evaluate.main(["--workdir", b, "--protocol", "linear"]) == 0
  knn, linear = workdir_lib.read_results(b)["evaluations"]
  pretrained = report["results"]["pretrained"]
  assert knn["results"]["pretrained"] == {
    k: v for k, v in pretrained.items() if k.startswith("knn_") or k == "feature_dim"
  }
  assert linear["results"]["pretrained"]["linear_top1"] == pretrained["linear_top1"]

  # One schema in every results.json, whoever wrote it.
  for workdir in (trained, a, b):
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
    assert set(results) == {"schema_version", "evaluations"} and results["schema_version"] == 2
    for record in results["evaluations"]:
      assert set(record) == RECORD_KEYS, record.keys()
      assert set(record["results"]) <= set(workdir_lib.ENCODER_NAMES)


def test_main_with_a_config_file_evaluates_one_protocol_and_exports(
  tmp_path_factory, tmp_path, devices
):
  """The README's form: --config configs/...py (+ overrides matching the run) --mode evaluate
  --protocol knn, and --mode export, on a workdir trained by sslax.main."""
  workdir = fresh_copy(trained_workdir(tmp_path_factory), tmp_path)
  tiny = [
    "--config.dataset.name=fake",
    "--config.dataset.image_size=16",
    "--config.dataset.num_train_examples=64",
    "--config.model.depth=10",
    "--config.model.width=0.125",
    "--config.simclr.proj_hidden_dim=32",
    "--config.simclr.proj_dim=16",
    "--config.eval.batch_size=512",
    "--config.batch_size=16",
  ]
  base = ["--config", "configs/simclr_fashion_mnist.py", "--workdir", workdir] + tiny
  r = _main_cli(*base, "--mode", "evaluate", "--protocol", "knn")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "knn_top1_k20" in r.stdout
  (record,) = workdir_lib.read_results(workdir)["evaluations"]
  assert record["protocol"] == "knn" and record["step"] == 4
  out = tmp_path / "exported"
  r = _main_cli(*base, "--mode", "export", "--export_format", "bundle", "--export_dir", str(out))
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads((out / "encoder.json").read_text())["source"]["step"] == 4


# ---------------------------------------------------------------------------- workdir errors


def _can_write(directory) -> bool:
  try:
    with open(os.path.join(directory, ".probe"), "w"):
      pass
    os.remove(os.path.join(directory, ".probe"))
    return True
  except OSError:
    return False


def _unwritable_dir(tmp_path) -> str:
  """A directory this process cannot write to (root ignores permission bits: then a system
  directory that refuses new files even to root)."""
  ro = tmp_path / "read_only"
  ro.mkdir()
  ro.chmod(0o555)
  if not _can_write(ro):
    return str(ro)
  for candidate in ("/sys", "/proc"):
    if os.path.isdir(candidate) and not _can_write(candidate):
      return candidate
  pytest.skip("no unwritable directory on this machine")


def test_workdir_that_is_a_file_fails_with_the_fix(tmp_path, capsys):
  path = tmp_path / "run"
  path.write_text("not a run")
  with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
    workdir_lib.check_for_training(str(path), tiny_config())
  assert evaluate.main(["--workdir", str(path), "--protocol", "knn"]) == 2
  assert "is a file, not a directory" in capsys.readouterr().err
  # The trainer's CLI: a one-line error, no traceback, nothing written.
  r = _main_cli("--config", "configs/simclr_fashion_mnist.py", "--workdir", str(path), timeout=120)
  assert r.returncode == 2 and "is a file, not a directory" in r.stderr, r.stderr[-2000:]
  assert "Traceback" not in r.stderr and path.read_text() == "not a run"


def test_unwritable_workdir_fails_with_the_fix(tmp_path, capsys):
  ro = _unwritable_dir(tmp_path)
  with pytest.raises(PermissionError, match="cannot be created in|is not writable"):
    workdir_lib.check_for_training(os.path.join(ro, "run"), tiny_config())
  with pytest.raises(PermissionError, match="is not writable"):
    workdir_lib.check_writable(ro)


def test_workdir_of_another_method_fails_with_the_fix(tmp_path_factory, tmp_path, devices):
  workdir = fresh_copy(trained_workdir(tmp_path_factory), tmp_path)
  byol = config_lib.base_config("byol")
  byol.model = tiny_config().model  # the same backbone: only the method differs
  with pytest.raises(ValueError, match="holds a run of method 'simclr'.*this config is 'byol'"):
    workdir_lib.check_for_training(workdir, byol)
  with pytest.raises(ValueError, match="holds a run of method 'simclr'"):
    evaluate.evaluate(workdir, "knn", config=byol)
  wider = tiny_config()
  wider.model.width = 0.25
  with pytest.raises(ValueError, match="holds a run of method 'simclr' with model"):
    evaluate.evaluate(workdir, "knn", config=wider)
  assert not os.path.exists(os.path.join(workdir, "results.json"))


# ------------------------------------------------------------------------------- old runs


def _old_style_config_json(workdir):
  """config.json as sslax wrote it before it recorded its version: every method's section."""
  with open(workdir_lib.config_path(workdir)) as f:
    values = json.load(f)
  del values[workdir_lib.VERSION_KEY]
  for name, method_cls in METHODS.items():
    values.setdefault(name, json.loads(method_cls.default_config().to_json_best_effort()))
  with open(workdir_lib.config_path(workdir), "w") as f:
    json.dump(values, f, indent=2)
  return values


def test_old_style_config_json_restores_and_evaluates(tmp_path_factory, tmp_path, devices):
  workdir = fresh_copy(trained_workdir(tmp_path_factory), tmp_path)
  values = _old_style_config_json(workdir)
  assert len([k for k in values if k in METHODS]) == len(METHODS) >= 18
  config = workdir_lib.load_config(workdir)
  assert config.to_dict() == tiny_config().to_dict()  # simclr's section only
  record = evaluate.evaluate(workdir, "knn")
  assert record["step"] == 4 and 0 <= record["results"]["pretrained"]["knn_top1_k20"] <= 1


def test_unreadable_config_json_names_the_version_that_wrote_it(tmp_path):
  for version, expected in (("0.0.1", "written by sslax 0.0.1"), (None, "sslax 0.1.0 or earlier")):
    values = json.loads(tiny_config().to_json_best_effort())
    values["method"] = "no_such_method"
    if version:
      values[workdir_lib.VERSION_KEY] = version
    workdir = tmp_path / f"run_{version}"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(values))
    with pytest.raises(ValueError, match=expected):
      workdir_lib.load_config(str(workdir))


def test_results_json_of_earlier_versions_is_read_in_the_one_schema(tmp_path):
  """Before schema 2: the end-of-run report at the top level, protocol records with results
  not keyed by encoder (except the image-text ones)."""
  knn = {"protocol": "knn", "step": 4, "results": {"knn_top1_k20": 0.5}}
  zero_shot = {"protocol": "zero_shot", "step": 4, "results": {"pretrained": {"top1": 0.7}}}
  old = {
    "step": 4,
    "dataset": "fake",
    "method": "simclr",
    "timestamp": "2026-11-28T10:00:00",
    "eval_seconds": 1.0,
    "results": {"pretrained": {"knn_top1_k20": 0.5}, "raw_pixels": {"knn_top1_k20": 0.4}},
    "evaluations": [knn, zero_shot],
  }
  (tmp_path / "results.json").write_text(json.dumps(old))
  results = workdir_lib.read_results(str(tmp_path))
  report, knn2, zero_shot2 = results["evaluations"]
  assert results["schema_version"] == 2
  assert report["protocol"] == "report" and report["results"] == old["results"]
  assert knn2["results"] == {"pretrained": {"knn_top1_k20": 0.5}}
  assert zero_shot2 == zero_shot
  assert workdir_lib.latest_record(results, "report") == report
  # The next append rewrites the file in schema 2, keeping every record.
  workdir_lib.append_record(str(tmp_path), dict(knn, step=5))
  again = json.loads((tmp_path / "results.json").read_text())
  assert again["schema_version"] == 2 and len(again["evaluations"]) == 4
  assert again["evaluations"][-1]["results"] == {"pretrained": {"knn_top1_k20": 0.5}}
