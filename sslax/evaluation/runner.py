"""End-of-training / on-demand evaluation: kNN and linear probe on frozen features.

Reports the pretrained encoder next to two baselines the demo must beat or explain:
the same network at its random initialisation, and raw pixels.
"""
from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from absl import logging

from sslax.evaluation import features as features_lib
from sslax.evaluation.knn import knn_accuracy
from sslax.evaluation.linear import linear_probe


def _backbone_variables(state):
  variables = {"params": state.params["backbone"]}
  if state.batch_stats and "backbone" in state.batch_stats:
    variables["batch_stats"] = state.batch_stats["backbone"]
  return variables


def evaluate_features(config, extract) -> dict:
  """extract(source) -> (features, labels); runs kNN and the linear probe."""
  from sslax import train as train_lib
  ev = config.eval
  train_src = train_lib.load_source(config, config.dataset.train_split, ev.num_train_examples)
  test_src = train_lib.load_source(config, config.dataset.test_split)
  x_train, y_train = extract(train_src)
  x_test, y_test = extract(test_src)
  num_classes = int(train_src.num_classes)
  knn = knn_accuracy(x_train, y_train, x_test, y_test, num_classes=num_classes,
                     ks=tuple(ev.knn_ks), temperature=ev.knn_temperature)
  probe = linear_probe(x_train, y_train, x_test, y_test, num_classes=num_classes,
                       epochs=ev.linear_epochs, learning_rate=ev.linear_lr,
                       weight_decay=ev.linear_weight_decay, seed=config.seed)
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
        backbone, variables, source, image_size=size, batch_size=batch, mesh=s.mesh,
        raw_pixels=raw_pixels)

  t0 = time.perf_counter()
  results = {"pretrained": evaluate_features(config, encoder(_backbone_variables(state)))}
  if config.eval.baselines:
    from sslax import train as train_lib
    init = train_lib.init_state(s)
    results["random_init"] = evaluate_features(config, encoder(_backbone_variables(init)))
    results["raw_pixels"] = evaluate_features(config, encoder(None, raw_pixels=True))
  record = {"step": int(jax.device_get(state.step)), "dataset": config.dataset.name,
            "method": config.method, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "eval_seconds": round(time.perf_counter() - t0, 1), "results": results}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(record, f, indent=2)
    print(format_table(record), flush=True)
  logging.info("Evaluation: %s", json.dumps(results))
  return record


def format_table(record: dict) -> str:
  results = record["results"]
  metrics = [k for k in results["pretrained"] if k != "feature_dim"]
  lines = [f"\n{record['dataset']} test accuracy (%), {record['method']} after {record['step']} steps:",
           f"{'encoder':<14}" + "".join(f"{m:>16}" for m in metrics)]
  for name, values in results.items():
    lines.append(f"{name:<14}" + "".join(f"{100 * values[m]:>16.2f}" for m in metrics))
  return "\n".join(lines)
