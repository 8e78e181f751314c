"""Command line: python -m sslax.main --config configs/NAME.py --workdir DIR [--config.key=value].

--mode train     pretrain (resuming from DIR's latest checkpoint) and evaluate at the end
--mode evaluate  evaluate DIR's latest checkpoint (kNN + linear probe), or one protocol with
                 --protocol knn|linear|finetune|lowshot|retrieval|pictures (see sslax/evaluate.py)
--mode export    export DIR's latest encoder: --export_format bundle|stablehlo|savedmodel
                 --export_dir PATH (see sslax/export.py)
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

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Path to a config file in configs/.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate", "export"], "What to do.")
_PROTOCOL = flags.DEFINE_string(
  "protocol",
  None,
  "--mode evaluate: run one protocol of sslax.evaluate instead of the end-of-training report.",
)
_EXPORT_FORMAT = flags.DEFINE_enum(
  "export_format", "bundle", ["bundle", "stablehlo", "savedmodel"], "--mode export: the format."
)
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "--mode export: where to write the encoder.")
flags.mark_flags_as_required(["config", "workdir"])


def _hide_accelerators_from_tf():
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")
  tf.config.set_visible_devices([], "TPU") if tf.config.list_physical_devices("TPU") else None


def main(argv):
  del argv
  if not any(a.startswith(("--verbosity", "-v")) for a in sys.argv):
    # Orbax and TF log every save at INFO; the trainer prints its own progress lines.
    logging.set_verbosity(logging.WARNING)
  config, workdir = _CONFIG.value, _WORKDIR.value
  from sslax import distributed

  distributed.initialize(config.distributed)  # before anything touches devices
  _hide_accelerators_from_tf()
  from sslax import train

  if _MODE.value == "train":
    out = train.train(config, workdir)
    if out["status"] == "preempted":
      logging.info("Stopped early after a preemption signal; rerun the same command to resume.")
  elif _MODE.value == "export":
    from sslax import export

    if not _EXPORT_DIR.value:
      raise app.UsageError("--mode export needs --export_dir PATH.")
    export.export(workdir, _EXPORT_DIR.value, _EXPORT_FORMAT.value, config=config)
  elif _PROTOCOL.value:
    from sslax import evaluate

    record = evaluate.evaluate(workdir, _PROTOCOL.value, config=config)
    print(record["results"], flush=True)
  else:
    from sslax.evaluation import runner
    from sslax import checkpoint

    s = train.setup(config)
    manager = checkpoint.make_manager(
      workdir, save_every_steps=1, max_to_keep=config.max_checkpoints_to_keep
    )
    state, step = checkpoint.restore_latest(manager, s.abstract_state)
    if state is None:
      raise SystemExit(f"No checkpoint in {workdir}/checkpoints to evaluate; train first.")
    runner.evaluate(config, workdir, state, s)


def _check_overrides(argv):
  """Unknown --config.* keys fail at once, with the valid keys, before flags are parsed."""
  from sslax import config as config_lib

  path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if path is None and "--config" in argv[:-1]:
    path = argv[argv.index("--config") + 1]
  if not path or not os.path.exists(path.split(":")[0]):
    return
  loaded = config_flags.config_flags._LoadConfigModule("config", path.split(":")[0])
  arg = path.split(":", 1)[1] if ":" in path else None
  cfg = loaded.get_config(arg) if arg is not None else loaded.get_config()
  try:
    config_lib.check_override_keys(cfg, argv)
  except ValueError as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)


def run_main():
  _check_overrides(sys.argv)
  app.run(main)


if __name__ == "__main__":
  run_main()
