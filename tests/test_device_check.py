"""benchmarks/device_check.py at its tiny size on CPU: the JSON a GPU run would write."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "device_check.py")


@pytest.fixture(scope="module")
def device_check():
  spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up there
  try:
    spec.loader.exec_module(module)
    yield module
  finally:
    sys.modules.pop(spec.name, None)


def _check_train_row(row: dict, batch: int) -> None:
  assert "error" not in row, row.get("error")
  assert row["dtype"] == "bfloat16" and row["batch_size"] == batch
  assert row["compile_s"] > 0 and row["step_s"] > 0
  assert row["images_per_s"] == pytest.approx(batch / row["step_s"], rel=0.01)
  assert row["flops_per_step"] > 0
  assert row["achieved_tflops"] == pytest.approx(
    row["flops_per_step"] / row["step_s"] / 1e12, rel=0.01
  )
  # A CPU has no data-sheet bf16 peak: MFU is null and the row says why.
  assert row["mfu"] is None and row["peak_bf16_tflops"] is None and "CPU" in row["mfu_note"]
  assert row["compiled_memory_mib"]["peak_mb"] > 0
  assert row["loss_finite"]


@pytest.mark.slow  # ~20 s of CPU: XLA:CPU compiles the init and the train step
def test_tiny_run_reports_each_model_and_records_a_failing_one(device_check, tmp_path, monkeypatch):
  # simclr fails at build time (no ResNet-7); the run records it and goes on to clip.
  bad = dataclasses.replace(device_check.MODELS["simclr"], tiny=("model.depth=7",))
  monkeypatch.setitem(device_check.MODELS, "simclr", bad)
  out = tmp_path / "device_check.json"
  argv = ["--size", "tiny", "--only", "clip,simclr", "--in_process", "--steps", "2"]
  assert device_check.main(argv + ["--out", str(out)]) == 1  # a row failed
  result = json.loads(out.read_text())
  assert result["size"] == "tiny" and result["machine"]["platform"] == "cpu"
  assert [r["model"] for r in result["rows"]] == ["simclr", "clip"]  # the fixed order
  simclr, clip = result["rows"]
  assert "depth" in simclr["error"]
  _check_train_row(clip, batch=8)
  assert clip["timed_steps"] == 2 and clip["views"] == [32]


def test_time_budget_skips_what_does_not_fit(device_check, tmp_path):
  out = tmp_path / "device_check.json"
  assert device_check.main(["--size", "tiny", "--time_budget_s", "0", "--out", str(out)]) == 1
  rows = json.loads(out.read_text())["rows"]
  assert [r["model"] for r in rows] == list(device_check.ALL)
  assert all(r["error"].startswith("skipped") for r in rows)


def test_unknown_model_is_refused(device_check):
  with pytest.raises(SystemExit):
    device_check.main(["--only", "simclr,resnet"])


@pytest.mark.slow
def test_command_line_runs_each_model_in_its_own_process(tmp_path):
  out = tmp_path / "device_check.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  cmd = [sys.executable, SCRIPT, "--size", "tiny", "--only", "mae,export", "--out", str(out)]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  result = json.loads(out.read_text())
  assert result["isolated"]
  mae, exported = result["rows"]
  _check_train_row(mae, batch=8)
  assert exported["platforms"] == ["cpu", "cuda"] and exported["ran_on"] == "cpu"
  assert exported["matches_direct"] and exported["images_per_s"] > 0
