"""Command line: python -m sslax.main --config configs/NAME.py --workdir DIR [--config.key=value].

--mode train     pretrain (resuming from DIR's latest checkpoint), then print the end-of-run
                 report (kNN + linear probe next to random-init and raw-pixel baselines)
--mode evaluate  the same report for DIR's latest checkpoint, or one protocol with
                 --protocol knn|linear|finetune|lowshot|retrieval|pictures|... (sslax/evaluate.py)
--mode export    export DIR's latest encoder: --export_format bundle|stablehlo|savedmodel|timm|onnx
                 --export_dir PATH (see sslax/export.py)

--config.key=value overrides use the grammar of `python -m sslax.evaluate` and `sslax.export`
(`sslax.config.apply_overrides`: Python literals coerced to the key's type, e.g.
--config.eval.knn_ks=5,50). With --mode evaluate or export, --config may be left out: the run's
own DIR/config.json is used (`sslax.workdir.load_config`).
"""

from __future__ import annotations

import os
import sys

# TensorFlow is only the input pipeline: keep it off GPUs/TPUs and quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The measured-best XLA:CPU options (sslax/perf.py), added to XLA_FLAGS before jax creates its
# backend; only on CPU and only for flags the user has not set (SSLAX_NO_CPU_XLA_DEFAULTS=1: none).
from sslax import perf  # noqa: E402

perf.apply_cpu_xla_defaults()

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from sslax import config as config_lib  # noqa: E402
from sslax import distributed, evaluate, export, train  # noqa: E402
from sslax import workdir as workdir_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Path to a config file in configs/ (optional with --mode evaluate/export: DIR/config.json).",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate", "export"], "What to do.")
_PROTOCOL = flags.DEFINE_string(
  "protocol",
  None,
  "--mode evaluate: run one protocol of sslax.evaluate instead of the end-of-training report.",
)
_EXPORT_FORMAT = flags.DEFINE_enum(
  "export_format", "bundle", list(export.FORMATS), "--mode export: the format."
)
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "--mode export: where to write the encoder.")
flags.mark_flags_as_required(["workdir"])

# The --config.key=value overrides, taken out of argv before absl parses it (run_main).
_OVERRIDES: list[str] = []


def train_and_evaluate(config, workdir: str, step_hook=None) -> dict:
  """Trains (resuming from `workdir`), then, if the run finished and config.eval.at_end, runs
  and prints the end-of-run report. Returns `sslax.train.train`'s dict plus "results": the
  report's results.json record ({} when there was none)."""
  out = train.train(config, workdir, step_hook=step_hook)
  out["results"] = {}
  if out["status"] == "done" and config.eval.at_end:
    out["results"] = evaluate.report_after_training(config, workdir, out["setup"], out["state"])
  return out


def _config(mode: str, workdir: str):
  """--config (with the overrides), or for evaluate/export without it DIR's own config."""
  if _CONFIG.value is None:
    if mode == "train":
      raise app.UsageError("--mode train needs --config configs/NAME.py.")
    return workdir_lib.load_config(workdir, _OVERRIDES)
  return config_lib.apply_overrides(_CONFIG.value, _OVERRIDES)


def main(argv):
  del argv
  if not any(a.startswith(("--verbosity", "-v")) for a in sys.argv):
    # Orbax and TF log every save at INFO; the trainer prints its own progress lines.
    logging.set_verbosity(logging.WARNING)
  mode, workdir = _MODE.value, _WORKDIR.value
  try:
    config = _config(mode, workdir)
    if mode == "train":  # a file, not writable, another run: say so before anything starts
      workdir_lib.check_for_training(workdir, config)
  except (ValueError, OSError) as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)
  perf.apply_cpu_devices(config.cpu_devices)  # before jax starts its CPU backend
  distributed.initialize(config.distributed)  # before anything touches devices
  evaluate.hide_accelerators_from_tf()

  if mode == "train":
    out = train_and_evaluate(config, workdir)
    if out["status"] == "preempted":
      logging.info("Stopped early after a preemption signal; rerun the same command to resume.")
  elif mode == "export" and not _EXPORT_DIR.value:
    raise app.UsageError("--mode export needs --export_dir PATH.")
  else:
    try:  # evaluate and export: a workdir they cannot use is a one-line error
      if mode == "export":
        export.export(workdir, _EXPORT_DIR.value, _EXPORT_FORMAT.value, config=config)
      else:
        record = evaluate.evaluate(workdir, _PROTOCOL.value or evaluate.REPORT, config=config)
        evaluate.print_record(record)
    except (ValueError, OSError) as e:
      sys.stderr.write(f"error: {e}\n")
      sys.exit(2)


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """argv -> (argv without --config.key=value overrides, the overrides as "key=value")."""
  rest, overrides, i = [], [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config.") and i > 0:
      if "=" not in arg and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
        arg, i = f"{arg}={argv[i + 1]}", i + 1  # --config.key value
      overrides.append(arg[len("--config.") :])
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def _check_overrides(argv: list[str], overrides: list[str]) -> None:
  """Unknown --config.* keys fail at once, with the valid keys, before anything starts."""
  path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if path is None and "--config" in argv[:-1]:
    path = argv[argv.index("--config") + 1]
  if not path or not os.path.exists(path.split(":")[0]):
    return
  loaded = config_flags.config_flags._LoadConfigModule("config", path.split(":")[0])
  arg = path.split(":", 1)[1] if ":" in path else None
  cfg = loaded.get_config(arg) if arg is not None else loaded.get_config()
  try:
    config_lib.check_override_keys(cfg, [f"--config.{o}" for o in overrides])
  except ValueError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)


def run_main():
  argv, overrides = split_overrides(sys.argv)
  _check_overrides(argv, overrides)
  _OVERRIDES[:] = overrides
  app.run(main, argv=argv)


if __name__ == "__main__":
  run_main()
