"""Linear evaluation as a method: the frozen pretrained backbone, a trained linear head, exact
resume, and its top-1 written next to the pretrained run's fast probe."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from sslax import checkpoint, evaluate, main, presets, train
from sslax import workdir as workdir_lib
from testkit.evaluation import fresh_copy, trained_workdir


def _config(pretrained: str, steps: int = 4):
  c = presets.linear_eval(pretrained)  # what configs/linear_eval.py:DIR builds
  c.linear_eval.num_classes = 10  # the fake dataset's
  c.batch_size = 16
  c.total_steps = steps
  c.log_every_steps = 2
  c.checkpoint_every_steps = 100
  c.eval.at_end = False
  return c


@pytest.fixture
def pretrained(tmp_path_factory, tmp_path):
  return fresh_copy(trained_workdir(tmp_path_factory), tmp_path, "pretrained")


def test_backbone_is_the_pretrained_one_and_stays_frozen_while_the_head_learns(
  pretrained, tmp_path, devices
):
  tree, _ = checkpoint.load_numpy(pretrained)
  out = train.train(_config(pretrained), str(tmp_path / "lin"))
  params = jax.device_get(out["state"].params)
  stats = jax.device_get(out["state"].batch_stats)
  jax.tree.map(np.testing.assert_array_equal, params["backbone"], tree["params"]["backbone"])
  jax.tree.map(np.testing.assert_array_equal, stats["backbone"], tree["batch_stats"]["backbone"])
  init = out["setup"].init_fn(jax.random.key(0)).params["head"]
  assert np.abs(np.asarray(params["head"]["kernel"]) - np.asarray(init["kernel"])).max() > 0
  losses = [json.loads(line)["loss"] for line in open(tmp_path / "lin" / "metrics.jsonl")]
  assert all(np.isfinite(losses))


@pytest.mark.slow  # three short runs; the trainer's own resume test covers the mechanism
def test_sigterm_then_resume_equals_uninterrupted(pretrained, tmp_path, devices):
  full = train.train(_config(pretrained, 6), str(tmp_path / "full"))

  def sigterm_at_3(step):
    if step == 3:
      os.kill(os.getpid(), signal.SIGTERM)

  workdir = str(tmp_path / "interrupted")
  first = train.train(_config(pretrained, 6), workdir, step_hook=sigterm_at_3)
  assert first["status"] == "preempted" and first["step"] == 3
  second = train.train(_config(pretrained, 6), workdir)
  assert second["status"] == "done"
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(second["state"].params),
    jax.device_get(full["state"].params),
  )


def test_report_scores_the_classifier_and_writes_it_next_to_the_fast_probe(
  pretrained, tmp_path, devices, capsys
):
  pre_step = evaluate.evaluate(pretrained, "report")["step"]  # the fast probe's record
  c = _config(pretrained)
  c.eval.at_end = True
  workdir = str(tmp_path / "lin")
  out = main.train_and_evaluate(c, workdir)
  own = out["results"]
  assert own["protocol"] == "classifier" and 0 <= own["results"]["pretrained"]["top1"] <= 1
  linked = workdir_lib.latest_record(workdir_lib.read_results(pretrained), "linear_eval")
  assert linked["step"] == pre_step
  scores = linked["results"]["pretrained"]
  assert scores["top1"] == own["results"]["pretrained"]["top1"]
  report = workdir_lib.latest_record(workdir_lib.read_results(pretrained), "report")
  assert scores["fast_probe_top1"] == report["results"]["pretrained"]["linear_top1"]
  assert "linear evaluation top-1" in capsys.readouterr().out


def test_a_model_other_than_the_pretrained_one_is_refused(pretrained, tmp_path, devices):
  c = _config(pretrained)
  c.model.width = 0.25
  with pytest.raises(ValueError, match="differs from the pretrained run"):
    train.train(c, str(tmp_path / "lin"))


def test_a_missing_pretrained_run_is_a_clear_error(tmp_path, devices):
  with pytest.raises(FileNotFoundError, match="config.json does not exist"):
    presets.linear_eval(str(tmp_path / "nothing"))
  c = presets.linear_eval()  # the README demo's workdir, which this test does not have
  c.linear_eval.pretrained_workdir = str(tmp_path / "nothing")
  c.dataset.name = "fake"
  c.dataset.num_train_examples = 64
  c.batch_size = 16
  with pytest.raises(FileNotFoundError, match="config.json does not exist"):
    train.train(c, str(tmp_path / "lin"))
