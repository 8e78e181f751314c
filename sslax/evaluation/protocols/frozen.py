"""Protocols on frozen features: kNN, linear probe, retrieval, and the end-of-run report.

The kNN classifier and the linear probe are wired here once (`knn_results`, `linear_results`);
the report is the two of them on the same cached features of each encoder.

Features come as row-sharded `FeatureBank`s (`split_features`): the kNN and the gradient-based
linear probe run on the sharded banks, on every device of the mesh. Gathered onto every process
(`FeatureBank.gather`), explicitly, only where a protocol needs the whole arrays on the host:
the closed-form ridge probe (float64 normal equations of the whole train set) and retrieval (it
ranks the whole gallery for every query): small-data protocols.
"""

from __future__ import annotations

from sslax.evaluation.features import split_features
from sslax.evaluation.knn import knn_accuracy_sharded
from sslax.evaluation.linear import linear_probe_sharded, linear_probe_sweep_sharded, ridge_probe
from sslax.evaluation.protocols.registry import register
from sslax.evaluation.retrieval import retrieval_metrics


def train_test_features(enc, ctx):
  """-> (train source, test source, train bank, test bank) of `enc` (row-sharded
  `FeatureBank`s): the kNN bank / probe train set is the first eval.num_train_examples of
  dataset.train_split (0: all)."""
  ds, ev = ctx.config.dataset, ctx.config.eval
  train_src, train = split_features(
    enc, ctx.config, ctx.workdir, ds.train_split, ev.num_train_examples
  )
  test_src, test = split_features(enc, ctx.config, ctx.workdir, ds.test_split)
  return train_src, test_src, train, test


def knn_results(config, train, test, num_classes: int) -> dict:
  """Weighted kNN (config.eval.knn_ks, knn_temperature) on the sharded banks ->
  {"knn_top1_k<k>", "feature_dim"}."""
  ev = config.eval
  acc = knn_accuracy_sharded(
    train, test, num_classes=num_classes, ks=tuple(ev.knn_ks), temperature=ev.knn_temperature
  )
  out = {f"knn_top1_k{k}": float(v) for k, v in acc.items()}
  out["feature_dim"] = train.dim
  return out


def linear_results(config, train, test, num_classes: int) -> dict:
  """The linear probe config.eval asks for (solver, lr sweep or one lr, ridge) -> its result
  dict (test_accuracy, train_accuracy, ...) with "linear_top1" = test_accuracy. The gradient
  solvers train on the sharded banks; closed_form gathers both (float64 on the host)."""
  ev = config.eval
  if ev.linear_solver == "closed_form":
    (x_train, y_train), (x_test, y_test) = train.gather(), test.gather()
    out = ridge_probe(
      x_train,
      y_train,
      x_test,
      y_test,
      num_classes=num_classes,
      l2_grid=tuple(ev.ridge_l2_grid),
      val_fraction=ev.linear_val_fraction,
      seed=config.seed,
    )
  else:
    kwargs = dict(
      num_classes=num_classes,
      epochs=ev.linear_epochs,
      weight_decay=ev.linear_weight_decay,
      seed=config.seed,
      optimizer=ev.linear_solver,
    )
    if ev.linear_lr_grid:
      out = linear_probe_sweep_sharded(
        train,
        test,
        learning_rates=tuple(ev.linear_lr_grid),
        val_fraction=ev.linear_val_fraction,
        **kwargs,
      )
    else:
      out = linear_probe_sharded(train, test, learning_rate=ev.linear_lr, **kwargs)
  return dict(out, linear_top1=float(out["test_accuracy"]))


def _per_encoder(fn):
  """A protocol that runs fn(config, train bank, test bank, num_classes) on each encoder's
  features."""

  def protocol(encoders, ctx):
    out = {}
    for enc in encoders:
      train_src, _, train, test = train_test_features(enc, ctx)
      out[enc.name] = fn(ctx.config, train, test, int(train_src.num_classes))
    return out

  return protocol


knn = register(
  "knn",
  summary="weighted kNN on frozen features (cosine, as InstDisc/DINO): --k 20,200 --temperature 0.07",
  baselines=(),
)(_per_encoder(knn_results))

linear = register(
  "linear",
  summary="linear probe on frozen features: AdamW, SGD or LARS (lr sweep picked on a held-out "
  "val split: --solver sgd --lr_grid 0.01,0.1,1), or closed-form ridge (--solver closed_form)",
)(_per_encoder(linear_results))


def _retrieval(config, train, test, num_classes):
  # Explicit gather: retrieval ranks the whole gallery for every query, on one device.
  (x_train, y_train), (x_test, y_test) = train.gather(), test.gather()
  return retrieval_metrics(x_test, y_test, x_train, y_train, ks=tuple(config.eval.retrieval_ks))


retrieval = register(
  "retrieval",
  summary="test images as queries against the train gallery (cosine): mAP, precision@k",
)(_per_encoder(_retrieval))


@register(
  "report",
  summary="what training ends with: kNN + linear probe, next to random-init and raw-pixel "
  "baselines (config.eval.baselines)",
  baselines=("random_init", "raw_pixels"),
)
def report(encoders, ctx) -> dict:
  """kNN and the linear probe on each encoder's features -> {name: {"knn_top1_k<k>" ...,
  "linear_top1", "feature_dim"}}: the same numbers as the knn and linear protocols."""
  out = {}
  for enc in encoders:
    train_src, _, train, test = train_test_features(enc, ctx)
    args = (ctx.config, train, test, int(train_src.num_classes))
    knn_out = knn_results(*args)
    dim = knn_out.pop("feature_dim")
    out[enc.name] = dict(knn_out, linear_top1=linear_results(*args)["linear_top1"], feature_dim=dim)
  return out


def format_table(record: dict) -> str:
  """The report's table: one row per encoder, accuracies in %."""
  results = record["results"]
  metrics = [k for k in next(iter(results.values())) if k != "feature_dim"]
  lines = [
    f"\n{record['dataset']} test accuracy (%), {record['method']} after {record['step']} steps:",
    f"{'encoder':<14}" + "".join(f"{m:>16}" for m in metrics),
  ]
  for name, values in results.items():
    lines.append(f"{name:<14}" + "".join(f"{100 * values[m]:>16.2f}" for m in metrics))
  return "\n".join(lines)
