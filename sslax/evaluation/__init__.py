"""Evaluation of frozen or fine-tuned encoders.

  encoder.py     `Encoder`: a frozen network (live train state | checkpoint | random init | raw
                 pixels) -> features; what every protocol takes
  protocols/     the protocols in one registry (report, knn, linear, retrieval, finetune,
                 lowshot, pictures, zero_shot, image_text_retrieval)
  knn.py, linear.py, retrieval.py, finetune.py, zero_shot.py, image_text_retrieval.py,
  pictures.py    the algorithms, on arrays and modules
  features.py    features of a split, cached in DIR/features/

Evaluation never builds a method or trains: the caller (sslax/evaluate.py) hands it encoders.
Fine-tuning, pictures, the encoders and the protocols are imported on use: they pull in the
model and input-pipeline code.
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
