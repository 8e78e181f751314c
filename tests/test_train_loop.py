"""The training loop: one compile per run, no host syncs between log steps, correct log means."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import threading
import traceback

import numpy as np
import pytest
from jax._src import array as jax_array

from sslax import checkpoint, train
from testkit.configs import tiny_config

# The ways host code reads a jax.Array or waits for it: float()/bool()/int()/str() and
# jax.device_get go through `_value`; np.asarray through `__array__`; explicit waits through
# `block_until_ready` and copies through `copy_to_host_async`.
_SYNC_METHODS = ("__array__", "item", "tolist", "block_until_ready", "copy_to_host_async")


class HostSyncDetector:
  """Records every main-thread read of / wait on a jax.Array outside the allowed functions."""

  def __init__(self):
    self.violations: list[str] = []
    self.allowed_depth = 0
    self.active = False
    self._main = threading.main_thread()

  def _record(self, what: str):
    if self.active and self.allowed_depth == 0 and threading.current_thread() is self._main:
      self.violations.append(what + "\n" + "".join(traceback.format_stack(limit=6)[:-2]))

  @contextlib.contextmanager
  def allowed(self):
    self.allowed_depth += 1
    try:
      yield
    finally:
      self.allowed_depth -= 1

  def allow(self, fn):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
      with self.allowed():
        return fn(*args, **kwargs)

    return wrapped

  def install(self, monkeypatch):
    value = jax_array.ArrayImpl._value
    detector = self

    def patched_value(self_):
      detector._record("jax.Array._value (float/bool/device_get)")
      return value.fget(self_)

    monkeypatch.setattr(jax_array.ArrayImpl, "_value", property(patched_value))
    for name in _SYNC_METHODS:
      original = getattr(jax_array.ArrayImpl, name)

      def patched(self_, *a, __name=name, __original=original, **k):
        detector._record(f"jax.Array.{__name}")
        return __original(self_, *a, **k)

      monkeypatch.setattr(jax_array.ArrayImpl, name, patched)


def _install(monkeypatch) -> HostSyncDetector:
  """Detector active while train() runs its loop; host syncs allowed only at the loop's
  sync points: metric means at log/save steps, the once-per-run perf analysis, checkpoints."""
  d = HostSyncDetector()
  d.install(monkeypatch)
  monkeypatch.setattr(train, "_fetch_means", d.allow(train._fetch_means))
  monkeypatch.setattr(train._StepPerf, "measure", d.allow(train._StepPerf.measure))
  monkeypatch.setattr(checkpoint, "save", d.allow(checkpoint.save))
  return d


def _config(total_steps, log_every):
  c = tiny_config()
  c.total_steps = total_steps
  c.log_every_steps = log_every
  c.checkpoint_every_steps = 1000  # only the final save
  return c


def _run(config, workdir, detector=None, stop_at=None):
  def hook(step):
    if detector is not None:
      detector.active = True  # from the first step on: setup and init may sync freely
    if step == stop_at:
      os.kill(os.getpid(), signal.SIGTERM)  # the trainer saves and stops at this step

  try:
    return train.train(config, workdir, step_hook=hook)
  finally:
    if detector is not None:
      detector.active = False


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def logged_every_3(tmp_path_factory, devices):
  """7 steps logged at 3, 6, 7 under the host-sync detector: (train output, violations, rows)."""
  workdir = str(tmp_path_factory.mktemp("every3"))
  with pytest.MonkeyPatch.context() as mp:
    detector = _install(mp)
    out = _run(_config(total_steps=7, log_every=3), workdir, detector)
  return out, detector.violations, _rows(workdir)


def test_one_compile_and_no_host_sync_between_log_steps(logged_every_3):
  out, violations, rows = logged_every_3
  assert out["status"] == "done" and int(out["state"].step) == 7
  assert out["train_step_compiles"] == 1
  assert violations == [], "host syncs outside log steps:\n" + "\n".join(violations)
  assert [r["step"] for r in rows] == [3, 6, 7]
  for r in rows:
    assert np.isfinite(r["loss"]) and r["images_per_s"] > 0 and r["step_s"] > 0
    assert 0.0 <= r["input_wait_frac"] <= 1.0
    # MFU: model FLOPs from XLA's cost analysis over the measured matmul peak.
    assert 0.0 < r["mfu"] < 1.0


def test_detector_catches_a_float_of_the_loss_in_the_loop(tmp_path, devices, monkeypatch):
  """The check above can fail: a `float(loss)` added to the loop is reported."""
  detector = _install(monkeypatch)
  real_make = train.make_train_step

  def make_with_sync(s):
    step = real_make(s)

    class Syncing:
      def __call__(self, state, batch):
        state, metrics = step(state, batch)
        float(metrics["loss"])  # what the test must catch
        return state, metrics

      def __getattr__(self, name):
        return getattr(step, name)

    return Syncing()

  monkeypatch.setattr(train, "make_train_step", make_with_sync)
  _run(_config(total_steps=2, log_every=100), str(tmp_path / "run"), detector)
  assert detector.violations and "_value" in detector.violations[0]


def test_logged_metrics_are_means_over_the_log_interval(logged_every_3, tmp_path):
  """On-device metric sums / count == the mean of the per-step values (logged every step)."""
  _, _, grouped = logged_every_3
  # The same run (same schedule: same total_steps) logged at every step, stopped after 3.
  workdir = str(tmp_path / "every1")
  _run(_config(total_steps=7, log_every=1), workdir, stop_at=3)
  per_step = {r["step"]: r for r in _rows(workdir)}
  assert sorted(per_step) == [1, 2, 3]
  for key in ("loss", "lr", "grad_norm", "contrastive_acc"):
    np.testing.assert_allclose(
      grouped[0][key], np.mean([per_step[i][key] for i in (1, 2, 3)]), rtol=1e-5, atol=1e-7
    )
