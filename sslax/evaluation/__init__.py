"""Frozen-feature evaluation protocols: weighted kNN and linear probe."""

from sslax.evaluation.knn import knn_accuracy, knn_predict
from sslax.evaluation.linear import linear_probe, standardize

__all__ = ["knn_accuracy", "knn_predict", "linear_probe", "standardize"]
