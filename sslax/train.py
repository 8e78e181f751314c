"""The training loop: config -> pretrained train state, the same code on CPU, GPU and TPU pods.

Sections: setup (`sslax.setup.build`), checkpoint restore, input, the jitted train step, the
loop (prefetch, on-device metric sums, logging, checkpoints, preemption). Evaluation is not
the trainer's: `sslax.main` runs the end-of-run report after `train` returns.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from sslax import __version__, _lazy, checkpoint, online_probe, perf, sharding
from sslax import workdir as workdir_lib
from sslax.data import pipeline, prefetch
from sslax.methods.base import PROBE_FEATURES
from sslax.setup import Setup, build, init_probe_state, init_state
from sslax.state import TrainState

# The training loop's TensorBoard writer and progress reports; clu imports TensorFlow.
metric_writers = _lazy.module("clu.metric_writers", "the training loop's metric writers")
periodic_actions = _lazy.module("clu.periodic_actions", "the training loop's progress reports")


def make_train_step(s: Setup):
  method, tx, schedule = s.method, s.tx, s.run.lr_schedule
  probe = getattr(s, "probe", None)  # stand-in setups (tests) may not have one

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.key, state.step)

    def loss_fn(params):
      return method.loss(params, state.batch_stats, state.method_state, batch, rng)

    (loss, (metrics, batch_stats, method_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
    )
    # The probe's features ride in the metrics; they are never logged (unused when it is off).
    metrics = dict(metrics)
    probe_features = metrics.pop(PROBE_FEATURES, None)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params = method.constrain_params(params, state.step + 1)
    method_state = method.after_update(method_state, params, state.step + 1)
    metrics = dict(
      metrics,
      loss=loss,
      lr=schedule(state.step),
      grad_norm=optax.global_norm(grads),
      param_norm=optax.global_norm(params),
    )
    new_state = state.replace(
      step=state.step + 1,
      params=params,
      batch_stats=batch_stats,
      opt_state=opt_state,
      method_state=method_state,
    )
    if probe is not None:
      # After the method's whole update and on its stop-gradient features: nothing above
      # depends on the probe, so the method's path is the same with the probe on or off.
      online_probe.check_features(method, probe_features, batch["label"], probe)
      probe_state, probe_metrics = probe.update(state.probe, probe_features, batch["label"])
      new_state = new_state.replace(probe=probe_state)
      metrics.update(probe_metrics)
    return new_state, metrics

  return jax.jit(
    train_step,
    in_shardings=(s.state_sharding, sharding.batch_sharding(s.mesh)),
    out_shardings=(s.state_sharding, sharding.replicated(s.mesh)),
    donate_argnums=(0,),
  )


# Device batches held ahead of the step by the prefetch thread (sslax/data/prefetch.py).
PREFETCH_BATCHES = 2


@functools.partial(jax.jit, donate_argnums=(0,))
def _add_metrics(sums: dict, metrics: dict) -> dict:
  """Running metric sums stay on device: one tiny async op per step, no host sync."""
  return jax.tree.map(jnp.add, sums, metrics)


def _fetch_means(sums: dict, count: int) -> dict[str, float]:
  """The loop's one device -> host transfer: metric means over the `count` steps summed."""
  host = jax.device_get(sums)
  return {k: float(np.mean(v)) / count for k, v in host.items()}


class _StepPerf:
  """Step FLOPs and compiled memory (from XLA's analyses) and the machine's measured peak.

  Computed once, at the first log step: re-lowering the step hits jax's compilation cache
  (no second compile), and the peak matmul is cached per process (sslax/perf.py). On GPU the
  FLOPs are the traced step's matmuls and convolutions (`perf.jaxpr_flops`): XLA:GPU's count
  misses what cuBLAS and cuDNN do.
  """

  def __init__(self, train_step, num_devices: int, dtype: str):
    self._train_step, self._num_devices, self._dtype = train_step, num_devices, dtype
    self.flops = self.peak_flops = self.memory = None
    self._done = False

  def measure(self, state, batch) -> None:
    if self._done:
      return
    self._done = True
    try:
      traced = self._train_step.trace(state, batch)
      compiled = traced.lower().compile()
      gpu = perf.is_gpu(compiled)
      self.flops = perf.jaxpr_flops(traced.jaxpr) if gpu else perf.step_flops(compiled)
      self.memory = perf.memory_stats(compiled)
      self.peak_flops = perf.machine_peak_flops(self._num_devices, self._dtype)
    except Exception as e:  # MFU is a report, never a reason to stop training
      logging.warning("No MFU: step cost analysis or peak FLOP/s failed: %s", e)


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return (
    f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 3600
    else f"{seconds // 60}m{seconds % 60:02d}s"
  )


def _restore(manager, s: Setup, workdir: str):
  """The newest checkpoint into this run's state layout, or a message naming who wrote it.

  A checkpoint without online-probe state (written before the probe existed, or with it off)
  or with one of another layout resumes with the probe started afresh, and a warning."""
  try:
    return checkpoint.restore_latest(manager, s.abstract_state)
  except (ValueError, KeyError, TypeError) as e:
    try:
      fields, step = checkpoint.restore_latest_without(
        manager, s.abstract_state, "probe", sharding.replicated(s.mesh)
      )
    except (ValueError, KeyError, TypeError, AttributeError):
      fields = None
    if fields is not None:
      if s.probe is not None:
        logging.warning(
          "The checkpoint at step %d in %s holds no online-probe state for this run (written "
          "before the probe existed, with it off, or for another number of classes): the "
          "probe starts afresh; its accuracy is not comparable to an uninterrupted run's.",
          step,
          manager.directory,
        )
      return TrainState(**fields, probe=init_probe_state(s)), step
    written_by = "an sslax version before 0.2.0"
    try:
      with open(workdir_lib.config_path(workdir)) as f:
        written_by = "sslax " + json.load(f).get(workdir_lib.VERSION_KEY, "< 0.2.0")
    except (OSError, ValueError):
      pass
    raise ValueError(
      f"The checkpoint at step {manager.latest_step()} in {manager.directory} does not match "
      f"this run's train state (method {s.config.method!r}, sslax {__version__}); it was "
      f"written by {written_by}. Its backbone still evaluates and exports "
      f"(python -m sslax.evaluate / sslax.export); to train, use a new --workdir. ({e})"
    ) from e


def train(
  config: ml_collections.ConfigDict, workdir: str, step_hook: Callable[[int], None] | None = None
) -> dict:
  """Pretrains, resuming from `workdir` if it holds a checkpoint.

  Returns {"state": TrainState, "status": "done"|"preempted", "step": int, "setup": Setup,
  "train_step_compiles": how many times the step was compiled (1: no recompiles), "metrics":
  the last logged metrics}.
  step_hook(step) is called after each step (tests use it to inject a SIGTERM).

  The device is never waited on between log steps: batches arrive through a prefetch thread,
  metrics are summed on device, and the host reads them (`_fetch_means`) only at log,
  checkpoint and preemption steps.
  """
  workdir_lib.check_for_training(workdir, config)  # before any data is read or compiled
  s = build(config)
  is_chief = jax.process_index() == 0
  if is_chief:
    workdir_lib.write_config(workdir, config)

  # ---- Checkpoint: resume from the newest complete one.
  manager = checkpoint.make_manager(
    workdir,
    save_every_steps=config.checkpoint_every_steps,
    max_to_keep=config.max_checkpoints_to_keep,
    use_async=config.async_checkpointing,
  )
  state, start_step = _restore(manager, s, workdir)
  if state is None:
    state = init_state(s)
  if is_chief:
    print(
      f"{config.method}: {s.run.total_steps} steps of global batch {config.batch_size} on "
      f"{s.mesh.devices.size} {jax.devices()[0].platform} device(s), mesh {dict(s.mesh.shape)}; "
      + (f"resumed at step {start_step}" if start_step else "starting from scratch")
      + f"; workdir {workdir}",
      flush=True,
    )

  # ---- Input: the stream continues at start_step exactly where it stopped; a background
  # thread reads and places the next batches on the mesh while the current step runs.
  dataset = pipeline.train_dataset(
    s.train_source,
    s.method.views(),
    global_batch=config.batch_size,
    seed=config.seed,
    start_step=start_step,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  batches = prefetch.DevicePrefetcher(
    dataset.as_numpy_iterator(),
    lambda b: sharding.make_global_batch(s.mesh, b),
    size=PREFETCH_BATCHES,
  )

  train_step = make_train_step(s)
  step_perf = _StepPerf(train_step, s.mesh.devices.size, config.dtype)
  # TensorBoard on the chief; the readable stdout line below replaces clu's logging writer.
  writer = metric_writers.SummaryWriter(workdir) if is_chief else metric_writers.MultiWriter([])
  progress = periodic_actions.ReportProgress(num_train_steps=s.run.total_steps, writer=writer)
  watcher = checkpoint.PreemptionWatcher()
  sums, num_summed, status, last_summary = None, 0, "done", {}
  # Throughput counts the steps dispatched after t_log; the first step's dispatch includes
  # its compilation, so the clock starts after it.
  t_log, timed_steps, wait_at_log, compile_s = time.perf_counter(), 0, 0.0, None
  step = start_step
  try:
    for step in range(start_step + 1, s.run.total_steps + 1):
      if step == start_step + 1 or (step - 1) % s.run.steps_per_epoch == 0:
        state = s.method.before_epoch(state, (step - 1) // s.run.steps_per_epoch, s.epoch_context())
      batch = next(batches)
      t_dispatch = time.perf_counter()
      state, metrics = train_step(state, batch)
      sums = metrics if sums is None else _add_metrics(sums, metrics)
      num_summed += 1
      if compile_s is None:
        compile_s = time.perf_counter() - t_dispatch
        t_log, wait_at_log = time.perf_counter(), batches.wait_seconds
      else:
        timed_steps += 1
      progress(step)
      if step_hook is not None:
        step_hook(step)

      is_log_step = step % config.log_every_steps == 0 or step == s.run.total_steps
      stopping = watcher.should_stop(step)  # every process asks, at every step, in order
      if is_log_step or stopping or manager.should_save(step):
        summary = _fetch_means(
          sums, num_summed
        )  # host sync only here: never checkpoint a NaN state
        if not np.isfinite(summary["loss"]):
          raise FloatingPointError(
            f"Loss became {summary['loss']} between steps {step - num_summed + 1} and {step}. "
            f"The last finite checkpoint in {manager.directory} (step {manager.latest_step()}) "
            f"is kept and resumed from on restart; lower optimizer.base_lr, raise "
            f"optimizer.warmup_epochs, or set optimizer.grad_clip_norm."
          )
      if is_log_step:
        step_perf.measure(state, batch)
        elapsed = time.perf_counter() - t_log
        step_s = elapsed / timed_steps if timed_steps else compile_s
        images_per_s = config.batch_size / step_s
        summary.update(
          epoch=step / s.run.steps_per_epoch,
          images_per_s=images_per_s,
          step_s=step_s,
          input_wait_frac=min((batches.wait_seconds - wait_at_log) / max(elapsed, 1e-9), 1.0),
        )
        # Unreadable records replaced so far by this process's reader (record sources only).
        replaced = getattr(s.train_source, "replaced", None)
        if replaced is not None:
          summary["replaced_records"] = float(replaced)
        step_mfu = perf.mfu(step_perf.flops, step_s, step_perf.peak_flops)
        if step_mfu is not None and timed_steps:
          summary["mfu"] = step_mfu
        writer.write_scalars(step, summary)
        last_summary = summary
        if is_chief:  # one JSON line per log step: easy to read back (benchmarks, notebooks)
          with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps({"step": step, **summary}) + "\n")
        if is_chief:
          eta = (s.run.total_steps - step) * step_s
          mfu_text = f"MFU {100 * summary['mfu']:.1f}%  " if "mfu" in summary else ""
          first = (
            f"  (compile {compile_s:.1f}s, step peak memory "
            f"{step_perf.memory['peak_mb']:.0f} MiB/device)"
            if step_perf.memory and step == start_step + num_summed
            else ""
          )
          probe_text = (
            f"probe top-1 {100 * summary[online_probe.TOP1_KEY]:.1f}%  "
            if online_probe.TOP1_KEY in summary
            else ""
          )
          print(
            f"step {step}/{s.run.total_steps}  loss {summary['loss']:.4f}  "
            f"lr {summary['lr']:.4g}  {probe_text}{images_per_s:.0f} img/s  {mfu_text}"
            f"input-wait {100 * summary['input_wait_frac']:.0f}%  ETA {_format_eta(eta)}{first}"
            + (f"  replaced records {replaced}" if replaced else ""),
            flush=True,
          )
        sums, num_summed, timed_steps = None, 0, 0
        t_log, wait_at_log = time.perf_counter(), batches.wait_seconds

      if stopping:
        checkpoint.save(manager, step, state, force=True)
        status = "preempted"
        if is_chief:
          print(
            f"SIGTERM: saved checkpoint at step {step}; rerun the same command to resume.",
            flush=True,
          )
        break
      checkpoint.save(manager, step, state, force=step == s.run.total_steps)
  finally:
    batches.close()
    manager.wait_until_finished()
    watcher.close()
  writer.flush()

  return {
    "state": state,
    "status": status,
    "step": step,
    "setup": s,
    "train_step_compiles": train_step._cache_size(),
    "metrics": last_summary,
  }
