"""Frozen-feature evaluation protocols: weighted kNN, linear probes, retrieval.

Fine-tuning (finetune.py), pictures (pictures.py) and the protocol runner (runner.py) are
imported on use: they pull in the model and input-pipeline code.
"""

from sslax.evaluation.knn import knn_accuracy, knn_predict
from sslax.evaluation.linear import linear_probe, linear_probe_sweep, ridge_probe, standardize
from sslax.evaluation.retrieval import nearest_neighbours, retrieval_metrics

__all__ = [
  "knn_accuracy",
  "knn_predict",
  "linear_probe",
  "linear_probe_sweep",
  "ridge_probe",
  "standardize",
  "nearest_neighbours",
  "retrieval_metrics",
]
