"""End-of-training / on-demand evaluation of a pretrained backbone.

`evaluate` (the trainer's end-of-run report): kNN and linear probe, next to two baselines the
demo must beat or explain: the same network at its random initialisation, and raw pixels.

`run_protocol` (what `python -m sslax.evaluate --protocol NAME` runs): one protocol of
PROTOCOLS on frozen features cached per checkpoint step (DIR/features/), or fine-tuning;
`append_record` merges its record into DIR/results.json under "evaluations".
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import numpy as np
from absl import logging

from sslax.data import augment, pipeline
from sslax.evaluation import features as features_lib
from sslax.evaluation import finetune as finetune_lib
from sslax.evaluation import retrieval as retrieval_lib
from sslax.evaluation.knn import knn_accuracy
from sslax.evaluation.linear import linear_probe, linear_probe_sweep, ridge_probe


def _backbone_variables(state):
  variables = {"params": state.params["backbone"]}
  if state.batch_stats and "backbone" in state.batch_stats:
    variables["batch_stats"] = state.batch_stats["backbone"]
  return variables


def run_linear(config, x_train, y_train, x_test, y_test, num_classes: int) -> dict:
  """The linear probe config.eval asks for (solver, lr sweep or one lr, ridge) -> result dict."""
  ev = config.eval
  if ev.linear_solver == "closed_form":
    return ridge_probe(
      x_train,
      y_train,
      x_test,
      y_test,
      num_classes=num_classes,
      l2_grid=tuple(ev.ridge_l2_grid),
      val_fraction=ev.linear_val_fraction,
      seed=config.seed,
    )
  kwargs = dict(
    num_classes=num_classes,
    epochs=ev.linear_epochs,
    weight_decay=ev.linear_weight_decay,
    seed=config.seed,
    optimizer=ev.linear_solver,
  )
  if ev.linear_lr_grid:
    return linear_probe_sweep(
      x_train,
      y_train,
      x_test,
      y_test,
      learning_rates=tuple(ev.linear_lr_grid),
      val_fraction=ev.linear_val_fraction,
      **kwargs,
    )
  return linear_probe(x_train, y_train, x_test, y_test, learning_rate=ev.linear_lr, **kwargs)


def evaluate_features(config, extract) -> dict:
  """extract(source) -> (features, labels); runs kNN and the linear probe."""
  from sslax import train as train_lib

  ev = config.eval
  train_src = train_lib.load_source(config, config.dataset.train_split, ev.num_train_examples)
  test_src = train_lib.load_source(config, config.dataset.test_split)
  x_train, y_train = extract(train_src)
  x_test, y_test = extract(test_src)
  num_classes = int(train_src.num_classes)
  knn = knn_accuracy(
    x_train,
    y_train,
    x_test,
    y_test,
    num_classes=num_classes,
    ks=tuple(ev.knn_ks),
    temperature=ev.knn_temperature,
  )
  probe = run_linear(config, x_train, y_train, x_test, y_test, num_classes)
  out = {f"knn_top1_k{k}": float(v) for k, v in knn.items()}
  out["linear_top1"] = float(probe["test_accuracy"])
  out["feature_dim"] = int(x_train.shape[1])
  return out


def evaluate(config, workdir: str, state, s) -> dict:
  """Evaluates `state`'s backbone (and, if config.eval.baselines, the baselines)."""
  backbone = s.method.network().backbone
  size, batch = config.dataset.image_size, config.eval.batch_size

  def encoder(variables, raw_pixels=False):
    return lambda source: features_lib.extract_features(
      backbone,
      variables,
      source,
      image_size=size,
      batch_size=batch,
      mesh=s.mesh,
      raw_pixels=raw_pixels,
    )

  t0 = time.perf_counter()
  results = {"pretrained": evaluate_features(config, encoder(_backbone_variables(state)))}
  if config.eval.baselines:
    from sslax import train as train_lib

    init = train_lib.init_state(s)
    results["random_init"] = evaluate_features(config, encoder(_backbone_variables(init)))
    results["raw_pixels"] = evaluate_features(config, encoder(None, raw_pixels=True))
  record = {
    "step": int(jax.device_get(state.step)),
    "dataset": config.dataset.name,
    "method": config.method,
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
    "eval_seconds": round(time.perf_counter() - t0, 1),
    "results": results,
  }
  if jax.process_index() == 0:
    # Keep the records that `sslax.evaluate` appended (they are per protocol and step).
    previous = read_results(workdir)
    if "evaluations" in previous:
      record = dict(record, evaluations=previous["evaluations"])
    _write_json(os.path.join(workdir, "results.json"), record)
    print(format_table(record), flush=True)
  logging.info("Evaluation: %s", json.dumps(results))
  return record


def format_table(record: dict) -> str:
  results = record["results"]
  metrics = [k for k in results["pretrained"] if k != "feature_dim"]
  lines = [
    f"\n{record['dataset']} test accuracy (%), {record['method']} after {record['step']} steps:",
    f"{'encoder':<14}" + "".join(f"{m:>16}" for m in metrics),
  ]
  for name, values in results.items():
    lines.append(f"{name:<14}" + "".join(f"{100 * values[m]:>16.2f}" for m in metrics))
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# One protocol at a time (python -m sslax.evaluate), on cached features
# ------------------------------------------------------------------------------------------

PROTOCOLS = (
  "knn",
  "linear",
  "finetune",
  "lowshot",
  "retrieval",
  "pictures",
  "zero_shot",
  "image_text_retrieval",
)


@dataclasses.dataclass
class Encoder:
  """A checkpoint's backbone, ready to embed: what every protocol needs."""

  config: object  # ml_collections.ConfigDict of the run
  mesh: jax.sharding.Mesh
  method: object  # the Method instance (for views())
  backbone: object  # flax module: images [B, S, S, C] -> [B, D]
  variables: dict  # {"params", "batch_stats"} of the backbone
  step: int


def read_results(workdir: str) -> dict:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)  # atomic: a crash never leaves a half-written results.json


def append_record(workdir: str, record: dict) -> None:
  """Adds `record` to the "evaluations" list of DIR/results.json, keeping everything else."""
  if jax.process_index() != 0:
    return
  results = read_results(workdir)
  results.setdefault("evaluations", []).append(record)
  os.makedirs(workdir, exist_ok=True)
  _write_json(os.path.join(workdir, "results.json"), results)


def split_features(enc: Encoder, workdir: str, split: str, num_examples: int = 0):
  """-> (source, features [N, D], labels [N]) of a split, from DIR/features/ when cached."""
  from sslax import train as train_lib

  config = enc.config
  source = train_lib.load_source(config, split, num_examples)
  meta = {
    "dataset": config.dataset.name,
    "data_dir": config.dataset.data_dir,
    "split": split,
    "num_examples": int(num_examples),
    "image_size": int(config.dataset.image_size),
    "seed": int(config.seed),
    "step": int(enc.step),
  }

  def extract(src):
    return features_lib.extract_features(
      enc.backbone,
      enc.variables,
      src,
      image_size=config.dataset.image_size,
      batch_size=config.eval.batch_size,
      mesh=enc.mesh,
    )

  x, y = features_lib.cached_features(
    extract, source, path=features_lib.cache_path(workdir, enc.step, split), meta=meta
  )
  return source, x, y


def _train_test_features(enc: Encoder, workdir: str):
  ds, ev = enc.config.dataset, enc.config.eval
  train_src, x_train, y_train = split_features(enc, workdir, ds.train_split, ev.num_train_examples)
  test_src, x_test, y_test = split_features(enc, workdir, ds.test_split)
  return train_src, test_src, x_train, y_train, x_test, y_test


def _finetune(enc: Encoder, train_src, test_src, seed: int) -> dict:
  ev = enc.config.eval
  return finetune_lib.finetune(
    enc.backbone,
    enc.variables,
    train_src,
    test_src,
    num_classes=int(train_src.num_classes),
    image_size=enc.config.dataset.image_size,
    mesh=enc.mesh,
    epochs=ev.finetune_epochs,
    batch_size=ev.finetune_batch_size,
    eval_batch_size=ev.batch_size,
    optimizer=ev.finetune_optimizer,
    learning_rate=ev.finetune_lr,
    weight_decay=ev.finetune_weight_decay,
    crop_scale=tuple(ev.finetune_crop_scale),
    seed=seed,
    layer_decay=ev.finetune_layer_decay,
    label_smoothing=ev.finetune_label_smoothing,
    warmup_epochs=ev.finetune_warmup_epochs,
    drop_path_rate=ev.finetune_drop_path_rate,
    b2=ev.finetune_b2,
  )


def _lowshot(enc: Encoder, workdir: str) -> dict:
  """Fine-tunes on each class-balanced fraction of the labels; the chosen ids go to DIR/lowshot/."""
  from sslax import train as train_lib

  config, ev = enc.config, enc.config.eval
  train_src = train_lib.load_source(config, config.dataset.train_split, ev.num_train_examples)
  test_src = train_lib.load_source(config, config.dataset.test_split)
  finetune_lib.require_random_access(train_src)
  out = {}
  for fraction in ev.lowshot_fractions:
    ids = finetune_lib.class_balanced_subset(
      train_src.labels, fraction, num_classes=int(train_src.num_classes), seed=ev.lowshot_seed
    )
    name = f"{100 * fraction:g}pct"
    path = os.path.join(workdir, "lowshot", f"subset_{name}_seed{ev.lowshot_seed}.json")
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      counts = np.bincount(train_src.labels[ids], minlength=int(train_src.num_classes))
      _write_json(
        path,
        {
          "fraction": fraction,
          "seed": ev.lowshot_seed,
          "split": config.dataset.train_split,
          "num_train_examples": len(train_src.labels),
          "per_class": counts.tolist(),
          "ids": ids.tolist(),
        },
      )
    result = _finetune(enc, finetune_lib.subset_source(train_src, ids), test_src, config.seed)
    out[name] = dict(result, fraction=fraction, subset_file=path)
  return out


def _pictures(
  enc: Encoder, workdir: str, num_images: int = 8, num_queries: int = 6, k: int = 8
) -> dict:
  """augmentations.png, embedding_pca.png, retrieval.png in DIR/pictures/."""
  from sslax.evaluation import pictures

  train_src, test_src, x_train, y_train, x_test, y_test = _train_test_features(enc, workdir)
  out_dir = os.path.join(workdir, "pictures")
  size = enc.config.dataset.image_size
  files = {}
  if jax.process_index() == 0:
    idx = np.arange(min(num_images, pipeline.num_examples(train_src)))
    files["augmentations"] = os.path.join(out_dir, "augmentations.png")
    pictures.augmentation_grid(
      images_at(train_src, idx), enc.method.views(), files["augmentations"], seed=enc.config.seed
    )
    files["embedding"] = os.path.join(out_dir, "embedding_pca.png")
    pictures.embedding_map(
      x_test,
      y_test,
      files["embedding"],
      num_classes=int(test_src.num_classes),
      class_names=tuple(getattr(test_src, "class_names", ())),
    )
    queries = np.random.default_rng(enc.config.seed).choice(
      len(y_test), size=min(num_queries, len(y_test)), replace=False
    )
    neighbours = retrieval_lib.nearest_neighbours(x_test[queries], x_train, k)
    centre = lambda src, ids: [_center(im, size) for im in images_at(src, ids)]
    gallery = centre(train_src, np.unique(neighbours))
    lookup = {i: im for i, im in zip(np.unique(neighbours), gallery)}
    files["retrieval"] = os.path.join(out_dir, "retrieval.png")
    pictures.retrieval_grid(
      centre(test_src, queries),
      y_test[queries],
      [[lookup[i] for i in row] for row in neighbours],
      y_train[neighbours],
      files["retrieval"],
    )
  return {"files": files}


def _center(image: np.ndarray, size: int) -> np.ndarray:
  return augment.center_view(image, size).numpy()


def images_at(source, indices) -> list[np.ndarray]:
  """The raw uint8 [H, W, C] images `indices` of a source (TFDS: in the eval pass's order)."""
  from sslax.data.sources import ArraySource, FileSource

  indices = [int(i) for i in indices]
  if isinstance(source, ArraySource):
    return [source.images[i] for i in indices]
  if isinstance(source, FileSource):
    return [source.decode(source.paths[i]).numpy() for i in indices]
  wanted, found = set(indices), {}
  ds = source.as_dataset(process_index=0, process_count=1, shuffle_seed=0)
  for i, example in enumerate(ds.as_numpy_iterator()):
    if i in wanted:
      found[i] = example["image"]
      if len(found) == len(wanted):
        break
  return [found[i] for i in indices]


def check_protocol(protocol: str) -> None:
  """Fails (before any checkpoint is read) on a protocol this version cannot run."""
  if protocol not in PROTOCOLS:
    raise ValueError(f"Unknown protocol {protocol!r}; choose one of {PROTOCOLS}.")


def check_eval_config(config) -> None:
  """Fails on bad config.eval values before a checkpoint is read or a feature computed."""
  from sslax import optim
  from sslax.evaluation.linear import SOLVERS

  ev = config.eval
  if ev.linear_solver not in SOLVERS:
    raise ValueError(f"config.eval.linear_solver={ev.linear_solver!r}; choose one of {SOLVERS}.")
  bad = [f for f in ev.lowshot_fractions if not 0 < f <= 1]
  if bad or not ev.lowshot_fractions:
    raise ValueError(
      f"config.eval.lowshot_fractions={tuple(ev.lowshot_fractions)} must be "
      f"non-empty fractions in (0, 1], e.g. (0.01, 0.1) for 1% and 10% of labels."
    )
  if ev.finetune_optimizer not in optim.OPTIMIZERS:
    raise ValueError(
      f"config.eval.finetune_optimizer={ev.finetune_optimizer!r}; choose one of {optim.OPTIMIZERS}."
    )
  if not 0 < ev.finetune_layer_decay <= 1:
    raise ValueError(
      f"config.eval.finetune_layer_decay={ev.finetune_layer_decay} must be in "
      f"(0, 1]; 1 turns layer-wise lr decay off, MAE uses 0.65-0.75."
    )
  if not 0 <= ev.finetune_label_smoothing < 1:
    raise ValueError(
      f"config.eval.finetune_label_smoothing={ev.finetune_label_smoothing} must "
      f"be in [0, 1); 0 is plain cross entropy, MAE uses 0.1."
    )
  if not 0 <= ev.finetune_drop_path_rate < 1:
    raise ValueError(
      f"config.eval.finetune_drop_path_rate={ev.finetune_drop_path_rate} must be in [0, 1)."
    )
  if ev.finetune_warmup_epochs < 0 or ev.finetune_warmup_epochs > ev.finetune_epochs:
    raise ValueError(
      f"config.eval.finetune_warmup_epochs={ev.finetune_warmup_epochs} must be in "
      f"[0, eval.finetune_epochs={ev.finetune_epochs}]."
    )
  if not 0 < ev.linear_val_fraction < 1:
    raise ValueError(f"config.eval.linear_val_fraction={ev.linear_val_fraction} must be in (0, 1).")


def run_protocol(enc: Encoder, workdir: str, protocol: str) -> dict:
  """Runs one protocol on `enc` and returns its results (floats in [0, 1] for accuracies)."""
  check_protocol(protocol)
  config, ev = enc.config, enc.config.eval
  if protocol in ("knn", "linear", "retrieval"):
    train_src, _, x_train, y_train, x_test, y_test = _train_test_features(enc, workdir)
    num_classes = int(train_src.num_classes)
    if protocol == "knn":
      acc = knn_accuracy(
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=num_classes,
        ks=tuple(ev.knn_ks),
        temperature=ev.knn_temperature,
      )
      return {f"knn_top1_k{k}": v for k, v in acc.items()}
    if protocol == "linear":
      return run_linear(config, x_train, y_train, x_test, y_test, num_classes)
    return retrieval_lib.retrieval_metrics(
      x_test, y_test, x_train, y_train, ks=tuple(ev.retrieval_ks)
    )
  if protocol == "finetune":
    from sslax import train as train_lib

    train_src = train_lib.load_source(config, config.dataset.train_split, ev.num_train_examples)
    return _finetune(
      enc, train_src, train_lib.load_source(config, config.dataset.test_split), config.seed
    )
  if protocol == "lowshot":
    return _lowshot(enc, workdir)
  if protocol in ("zero_shot", "image_text_retrieval"):
    return _image_text_protocol(enc, workdir, protocol)
  return _pictures(enc, workdir)


def _image_text_protocol(enc: Encoder, workdir: str, protocol: str) -> dict:
  """zero_shot: prompt-ensemble classification of dataset.zero_shot_dataset (default: the
  training dataset's labels) on dataset.zero_shot_split. image_text_retrieval: Recall@K both
  ways on the (image, caption) pairs of dataset.test_split. Both for the trained model and,
  with eval.baselines, the same network at its random initialisation."""
  from sslax import train as train_lib
  from sslax.data import image_text, sources
  from sslax.evaluation import image_text_retrieval, zero_shot

  config, ds = enc.config, enc.config.dataset
  trained = zero_shot.restore_model(config, workdir, enc.method)
  if protocol == "zero_shot":
    name = ds.zero_shot_dataset or ds.name
    source = sources.get_source(
      name,
      ds.zero_shot_split,
      data_dir=(ds.data_dir or None) if name == ds.name else None,
      image_size=ds.image_size,
      seed=config.seed,
    )

    def run(model):
      return zero_shot.zero_shot(
        model,
        source,
        image_text.prompt_class_names(source),
        tuple(ds.zero_shot_templates),
        config=config,
        mesh=enc.mesh,
      )
  else:
    source = train_lib.load_source(config, ds.test_split)
    if getattr(source, "tokens", None) is None:
      raise ValueError(
        f"--protocol image_text_retrieval needs captions: config.dataset.name="
        f"{ds.name!r} is not an image-text dataset ({sources.IMAGE_TEXT_DATASETS})."
      )

    def run(model):
      images, _ = zero_shot.image_embeddings(
        model, source, image_size=ds.image_size, batch_size=config.eval.batch_size, mesh=enc.mesh
      )
      texts = zero_shot.text_embeddings_of_tokens(model, source.tokens, config.text.context_length)
      return image_text_retrieval.image_text_retrieval(
        images, texts, tuple(config.eval.retrieval_ks)
      )

  results = {"pretrained": run(trained)}
  if config.eval.baselines:
    channels = train_lib.image_channels(source)
    results["random_init"] = run(zero_shot.random_init_model(config, enc.method, channels))
  return results


def protocol_record(enc: Encoder, protocol: str, results: dict, seconds: float) -> dict:
  """What results.json keeps about one protocol run."""
  return {
    "protocol": protocol,
    "step": int(enc.step),
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "method": enc.config.method,
    "dataset": enc.config.dataset.name,
    "eval_seconds": round(seconds, 1),
    "config": json.loads(enc.config.to_json_best_effort()),
    "results": results,
  }
