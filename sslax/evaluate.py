"""Evaluate a trained workdir: python -m sslax.evaluate --workdir DIR --protocol NAME.

Protocols (sslax/evaluation/protocols/):
  report     kNN + linear probe next to the random-init and raw-pixel baselines: the table
             `python -m sslax.main` prints at the end of training (and with --mode evaluate)
  knn        weighted kNN on frozen features (--k 20,200 --temperature 0.07)
  linear     linear probe on frozen features: AdamW, SGD or LARS with an lr sweep picked on a
             held-out val split (--solver sgd --lr_grid 0.01,0.1,1), or closed-form ridge
             (--solver closed_form)
  retrieval  test images as queries against the train gallery (cosine): mAP, precision@k
  finetune   backbone + linear head fine-tuned end to end on all train labels, next to the
             random-init network fine-tuned the same way
  lowshot    the same on class-balanced 1% / 10% label subsets (--fractions 0.01,0.1); the
             chosen ids are saved to DIR/lowshot/
  pictures   PNGs in DIR/pictures/: augmented views, PCA map of test features, retrieval grid
  zero_shot  image-text models (clip, siglip): prompt-ensemble zero-shot accuracy on
             dataset.zero_shot_dataset (templates: dataset.zero_shot_templates), vs random init
  image_text_retrieval  image-text models: image->text and text->image Recall@1/5/10 on the
             held-out pairs of dataset.test_split, vs random init
  classifier top-1/top-5 of a linear evaluation run (configs/linear_eval.py:DIR), the
             papers' protocol; the end-of-run report of such a run, also written to DIR

The run's config is rebuilt from DIR/config.json (`sslax.workdir.load_config`); any key can be
overridden with --config.<key>=<value> (e.g. --config.eval.knn_temperature=0.1), the grammar of
`python -m sslax.main`. The newest checkpoint is evaluated; frozen features are cached in
DIR/features/ and reused; each run appends one record to DIR/results.json (schema: see
sslax/workdir.py).

This module is the glue between a run and the evaluation library: it builds the run's method
(for its backbone module, its random initialisation and, for image-text models, its text
tower) and hands `sslax.evaluation` encoders. `sslax.main` calls the same `evaluate`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import ml_collections  # noqa: E402
from absl import logging  # noqa: E402

from sslax import config as config_lib  # noqa: E402
from sslax import distributed  # noqa: E402
from sslax import setup as setup_lib  # noqa: E402
from sslax import workdir as workdir_lib  # noqa: E402
from sslax.data.sources import subsets  # noqa: E402
from sslax.evaluation import encoder as encoder_lib  # noqa: E402
from sslax.evaluation import protocols  # noqa: E402
from sslax.methods.image_text import ImageTextMethod, restore_tokenizer  # noqa: E402

REPORT = "report"
CLASSIFIER = "classifier"  # protocol of a classifier run's report (sslax.methods.linear_eval)
LINEAR_EVAL = "linear_eval"  # its record in the pretrained run's results.json
FINETUNE_RUN = "finetune_run"  # a fine-tuning run's (linear_eval.finetune) record there


def restore_encoder(
  config: ml_collections.ConfigDict, workdir: str, *, setup=None, devices=None
) -> encoder_lib.Encoder:
  """The one restore path of both CLIs: DIR's newest checkpoint's backbone as the "pretrained"
  encoder, checked against config's model. setup: the run's `sslax.setup.Setup` (built here
  over `devices` if None)."""
  s = setup_lib.build(config, devices) if setup is None else setup
  return encoder_lib.from_checkpoint(workdir, config, s.method.network().backbone, mesh=s.mesh)


def random_init_variables(s) -> tuple[dict, dict]:
  """(params, batch_stats) of the whole network at the trainer's step 0 (config.seed)."""
  init = setup_lib.init_state(s)
  return init.params, init.batch_stats


def encoders_for(protocol: str, config, workdir: str, s, *, state=None) -> list:
  """The encoders `protocol` runs on: the trained one (the live `state` if given, else DIR's
  newest checkpoint) and, with config.eval.baselines, the protocol's baselines."""
  p = protocols.get(protocol)
  if p.image_text:
    return _image_text_encoders(p, config, workdir, s, state)
  if protocol == CLASSIFIER:
    return [_classifier_encoder(config, workdir, s, state)]
  backbone = s.method.network().backbone
  size, channels = config.dataset.image_size, s.run.channels
  if state is None:
    trained = restore_encoder(config, workdir, setup=s)
  else:
    trained = encoder_lib.from_train_state(
      state, backbone, image_size=size, channels=channels, mesh=s.mesh
    )
  encoders = [trained]
  for name in p.baselines if config.eval.baselines else ():
    if name == encoder_lib.RANDOM_INIT:
      params, batch_stats = random_init_variables(s)
      encoders.append(
        encoder_lib.from_variables(
          backbone,
          encoder_lib.backbone_variables(params, batch_stats),
          name=name,
          image_size=size,
          channels=channels,
          mesh=s.mesh,
        )
      )
    elif name == encoder_lib.RAW_PIXELS:
      encoders.append(encoder_lib.raw_pixels(image_size=size, channels=channels, mesh=s.mesh))
    else:
      raise ValueError(f"protocol {protocol!r}: unknown baseline encoder {name!r}")
  return encoders


def _classifier_encoder(config, workdir: str, s, state):
  """The whole network of a classifier run (linear_eval: frozen backbone + linear head), whose
  "features" are its logits."""
  if getattr(s.method, "report_protocol", REPORT) != CLASSIFIER:
    raise ValueError(
      f"--protocol {CLASSIFIER} scores a trained classifier (method linear_eval); this run's "
      f"method is {config.method!r}: use knn, linear, finetune, lowshot or retrieval."
    )
  if state is None:
    tree, step = encoder_lib.load_checkpoint(workdir)
    variables = {"params": tree["params"], "batch_stats": tree.get("batch_stats") or {}}
  else:
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    step = int(jax.device_get(state.step))
  return encoder_lib.from_variables(
    encoder_lib.ModuleMethod(s.method.network(), "__call__"),
    variables,
    name=encoder_lib.PRETRAINED,
    image_size=config.dataset.image_size,
    channels=s.run.channels,
    mesh=s.mesh,
    step=step,
  )


def _record_linear_eval(record: dict, method, workdir: str) -> None:
  """A linear evaluation's (or a fine-tuning's: `linear_eval.finetune`) top-1, appended to the
  pretrained run's results.json next to its fast probe (frozen centre-crop features) and
  printed beside it, under protocol "linear_eval" or "finetune_run" with the training subset
  it used. Best effort: a pretrained workdir that cannot be written (read-only, remote without
  rights) only logs a warning."""
  config = method.config
  pretrained_dir = config.linear_eval.pretrained_workdir
  finetune = bool(config.linear_eval.get("finetune", False))
  data = config.dataset
  subset = subsets.requested(data, data.train_split)
  pretrained_step = int(method.pretrained()["step"])
  scores = dict(record["results"][encoder_lib.PRETRAINED])
  report = workdir_lib.latest_record(workdir_lib.read_results(pretrained_dir), REPORT)
  probe = None
  if report is not None and report["step"] == pretrained_step:
    probe = report["results"].get(encoder_lib.PRETRAINED, {}).get("linear_top1")
  scores.update(
    fast_probe_top1=probe,
    weights=method.pretrained()["weights"],
    linear_eval_workdir=os.path.abspath(workdir) if workdir_lib.is_local(workdir) else workdir,
    linear_eval_step=record["step"],
    epochs=float(config.total_epochs) if not config.total_steps else None,
    steps=int(method.run.total_steps),
    training_subset=subset,
  )
  protocol = FINETUNE_RUN if finetune else LINEAR_EVAL
  linked = {**record, "protocol": protocol, "step": pretrained_step}
  linked["results"] = {encoder_lib.PRETRAINED: scores}
  if jax.process_index() == 0:
    try:
      workdir_lib.append_record(pretrained_dir, linked)
    except OSError as e:
      logging.warning("Could not add the linear evaluation to %s: %s", pretrained_dir, e)
    probe_text = "no report at this step" if probe is None else f"{100 * probe:.2f}"
    print(
      f"{pretrained_dir} (step {pretrained_step}): "
      f"{'fine-tuning' if finetune else 'linear evaluation'} top-1 "
      f"{100 * scores['top1']:.2f} (augmented crops, {method.run.total_steps} steps"
      f"{'' if subset is None else f', training subset {subset}'}); "
      f"fast probe on frozen features: {probe_text}",
      flush=True,
    )


def _image_text_encoders(p, config, workdir: str, s, state) -> list:
  """Image tower + text tower (with the checkpoint's own tokenizer) of a clip / siglip run."""
  method = s.method
  if not isinstance(method, ImageTextMethod):
    raise ValueError(
      f"--protocol {p.name} needs an image-text model (method clip or siglip); this run's "
      f"method is {config.method!r}: use knn, linear, finetune, lowshot or retrieval."
    )
  network = method.network()
  image_tower = encoder_lib.ModuleMethod(network, "encode_image")

  def encode_text(variables, tokens):
    return network.apply(variables, tokens, method=type(network).encode_text)

  def encoder(name, variables, tokenizer, step):
    text = encoder_lib.TextTower(encode_text, variables, tokenizer, config.text.context_length)
    return encoder_lib.from_variables(
      image_tower,
      variables,
      name=name,
      image_size=config.dataset.image_size,
      channels=s.run.channels,
      mesh=s.mesh,
      step=step,
      text=text,
    )

  if state is None:
    tree, step = encoder_lib.load_checkpoint(workdir)
    variables = {"params": tree["params"], "batch_stats": tree.get("batch_stats") or {}}
    method_state = tree.get("method_state")
  else:
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    method_state, step = jax.device_get(state.method_state), int(jax.device_get(state.step))
  encoders = [encoder(encoder_lib.PRETRAINED, variables, restore_tokenizer(method_state), step)]
  if config.eval.baselines and encoder_lib.RANDOM_INIT in p.baselines:
    params, batch_stats = random_init_variables(s)
    variables = {"params": params, "batch_stats": batch_stats}
    encoders.append(encoder(encoder_lib.RANDOM_INIT, variables, method.tokenizer(), 0))
  return encoders


def evaluate(
  workdir: str,
  protocol: str = REPORT,
  *,
  config: ml_collections.ConfigDict | None = None,
  overrides: Sequence[str] = (),
  setup=None,
  state=None,
  devices=None,
) -> dict:
  """Runs `protocol` on DIR's run and appends its record to DIR/results.json.

  config: use this config instead of DIR/config.json (sslax.main passes its --config); it must
    be a config of the run's method and model. overrides: "a.b=value" strings applied to it.
  setup, state: the run's Setup and live TrainState (sslax.main after training): the trained
    encoder is `state`'s instead of the newest checkpoint's.
  Returns the record (schema: sslax/workdir.py).
  """
  protocols.get(protocol)  # an unknown name fails before anything is read
  if config is None:
    workdir_lib.check_for_evaluation(workdir)
    config = workdir_lib.load_config(workdir, overrides)
  else:
    config = config_lib.apply_overrides(config, overrides)
    if state is None:
      workdir_lib.check_for_evaluation(workdir, config)
  protocols.check_eval_config(config)
  s = setup_lib.build(config, devices) if setup is None else setup
  if protocol == REPORT:  # a method may score itself another way (linear_eval: its classifier)
    protocol = getattr(s.method, "report_protocol", REPORT)
  encoders = encoders_for(protocol, config, workdir, s, state=state)
  ctx = protocols.Context(config=config, workdir=workdir, views=tuple(s.method.views()))
  record = protocols.run(protocol, encoders, ctx)
  if jax.process_index() == 0:
    workdir_lib.append_record(workdir, record)
  if protocol == CLASSIFIER and hasattr(s.method, "pretrained"):
    _record_linear_eval(record, s.method, workdir)
  return record


def report_after_training(config, workdir: str, setup, state) -> dict:
  """The end-of-run report (sslax.main after `train`): the live state's backbone, kNN + linear
  probe next to the baselines, printed as a table and appended to DIR/results.json."""
  record = evaluate(workdir, REPORT, config=config, setup=setup, state=state)
  print_record(record)
  return record


def format_record(record: dict) -> str:
  """The report as its table; any other protocol as JSON {protocol, step, results}."""
  if record["protocol"] == REPORT:
    return protocols.format_table(record)
  return json.dumps({k: record[k] for k in ("protocol", "step", "results")}, indent=2)


def print_record(record: dict) -> None:
  if jax.process_index() == 0:
    print(format_record(record), flush=True)


def _list(cast):
  return lambda text: tuple(cast(v) for v in text.split(",") if v.strip())


# Shorthand flags -> the config keys they set.
FLAGS_TO_KEYS = {
  "k": "eval.knn_ks",
  "temperature": "eval.knn_temperature",
  "solver": "eval.linear_solver",
  "lr_grid": "eval.linear_lr_grid",
  "fractions": "eval.lowshot_fractions",
}


def parse_args(argv: Sequence[str]):
  """-> (argparse namespace, config override strings)."""
  parser = argparse.ArgumentParser(
    prog="python -m sslax.evaluate",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--workdir", required=True, help="A directory written by the trainer.")
  parser.add_argument("--protocol", required=True, choices=protocols.names())
  parser.add_argument(
    "--k", type=_list(int), help="kNN: neighbour counts, e.g. 20,200 (eval.knn_ks)."
  )
  parser.add_argument(
    "--temperature", type=float, help="kNN vote temperature (eval.knn_temperature)."
  )
  parser.add_argument(
    "--solver",
    choices=("adamw", "sgd", "lars", "closed_form"),
    help="Linear probe solver (eval.linear_solver).",
  )
  parser.add_argument(
    "--lr_grid",
    type=_list(float),
    help="Linear probe lr sweep, e.g. 0.01,0.1,1 (eval.linear_lr_grid).",
  )
  parser.add_argument(
    "--fractions",
    type=_list(float),
    help="Low-shot label fractions, e.g. 0.01,0.1 (eval.lowshot_fractions).",
  )
  args, rest = parser.parse_known_args(argv)
  bad = [a for a in rest if not a.startswith("--config.")]
  if bad:
    parser.error(f"unrecognized arguments: {' '.join(bad)} (config keys go as --config.key=value)")
  overrides = list(rest)
  for flag, key in FLAGS_TO_KEYS.items():
    value = getattr(args, flag)
    if value is not None:
      overrides.append(f"{key}={value!r}" if not isinstance(value, str) else f"{key}={value}")
  return args, overrides


def hide_accelerators_from_tf() -> None:
  """TensorFlow is only the input pipeline: keep it off GPUs and TPUs."""
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")
  if tf.config.list_physical_devices("TPU"):
    tf.config.set_visible_devices([], "TPU")


def main(argv: Sequence[str] | None = None) -> int:
  args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
  logging.set_verbosity(logging.WARNING)
  hide_accelerators_from_tf()
  try:
    workdir_lib.check_for_evaluation(args.workdir)
    config = workdir_lib.load_config(args.workdir, overrides)
    distributed.initialize(config.distributed)  # before anything touches devices
    record = evaluate(args.workdir, args.protocol, config=config)
  except (NotImplementedError, FileNotFoundError, ValueError, OSError) as e:
    sys.stderr.write(f"error: {e}\n")
    return 2
  print_record(record)
  return 0


if __name__ == "__main__":
  sys.exit(main())
