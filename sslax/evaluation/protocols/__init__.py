"""Evaluation protocols in one registry: `PROTOCOLS[name].fn(encoders, ctx)`.

  report                kNN + linear probe (what training ends with; baselines: random init,
                        raw pixels)
  knn, linear, retrieval  frozen features (frozen.py)
  finetune, lowshot     end-to-end fine-tuning (finetune.py)
  pictures              PNGs of views, features and neighbours (pictures.py)
  zero_shot, image_text_retrieval   image-text models (image_text.py)
  classifier            top-1/top-5 of a trained classifier: linear evaluation runs (classifier.py)

`run(name, encoders, ctx)` runs one and returns its results.json record (schema in
sslax/workdir.py). Adding a protocol: a function `fn(encoders, ctx) -> {encoder name: dict}`
decorated with `registry.register(name, summary=...)` in a module imported here.
"""

from __future__ import annotations

import json
import time
from typing import Sequence

from sslax import __version__, optim
from sslax.evaluation import encoder as encoder_lib
from sslax.evaluation.linear import SOLVERS

# Importing a protocol module registers its protocols; PROTOCOLS keeps this order.
from sslax.evaluation.protocols import frozen, finetune, pictures, image_text, classifier
from sslax.evaluation.protocols.frozen import format_table, knn_results, linear_results
from sslax.evaluation.protocols.registry import PROTOCOLS, Context, Protocol, get, register

__all__ = [
  "PROTOCOLS",
  "Context",
  "Protocol",
  "check_eval_config",
  "classifier",
  "finetune",
  "format_table",
  "frozen",
  "get",
  "image_text",
  "knn_results",
  "linear_results",
  "names",
  "pictures",
  "register",
  "run",
]


def names() -> tuple[str, ...]:
  return tuple(PROTOCOLS)


def run(name: str, encoders: Sequence, ctx: Context) -> dict:
  """Runs protocol `name` on `encoders` -> its record {"protocol", "step", "timestamp",
  "method", "dataset", "eval_seconds", "sslax_version", "config", "results": {encoder: ...}}.
  `step` is the first encoder's (the trained one)."""
  protocol = get(name)
  check_eval_config(ctx.config)
  # Every protocol sees images as training did: the run's evaluation view and normalisation.
  encoders = [encoder_lib.with_preprocessing(enc, ctx.config) for enc in encoders]
  t0 = time.perf_counter()
  results = protocol.fn(encoders, ctx)
  config = ctx.config
  return {
    "protocol": name,
    "step": int(encoders[0].step),
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "method": config.method,
    "dataset": config.dataset.name,
    "eval_seconds": round(time.perf_counter() - t0, 1),
    "sslax_version": __version__,
    "config": json.loads(config.to_json_best_effort()),
    "results": results,
  }


def check_eval_config(config) -> None:
  """Fails on bad config.eval values before a checkpoint is read or a feature computed."""
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
  if not 0 < ev.crop_fraction <= 1:
    raise ValueError(
      f"config.eval.crop_fraction={ev.crop_fraction} must be in (0, 1]: 1.0 for 28-32 px "
      f"data (the whole image), 0.875 for ImageNet-size data (resize 256, crop 224)."
    )
  if not 0 < ev.linear_val_fraction < 1:
    raise ValueError(f"config.eval.linear_val_fraction={ev.linear_val_fraction} must be in (0, 1).")
