"""`--protocol lowshot` on subset list files (eval.lowshot_files) instead of fractions."""

import json

import numpy as np

from sslax import evaluate
from sslax.evaluation.protocols import finetune as finetune_protocols
from sslax import workdir as workdir_lib
from sslax.data import sources
from testkit.evaluation import fresh_copy, trained_workdir


def test_lowshot_fine_tunes_on_each_listed_subset(tmp_path_factory, tmp_path, devices, monkeypatch):
  # The fine-tuning itself is tests/evaluation/test_evaluate_workdir.py's; here: what it gets.
  tuned = []

  def fake_finetune(enc, config, train_src, test_src):
    tuned.append(np.asarray(train_src.images))
    return {"top1": 0.5, "train_examples": len(train_src), "steps": 1}

  monkeypatch.setattr(finetune_protocols, "_finetune", fake_finetune)
  workdir = fresh_copy(trained_workdir(tmp_path_factory), tmp_path)
  config = workdir_lib.load_config(workdir)
  train = sources.load_source(config, "train", config.eval.num_train_examples)
  ids, _ = sources.subsets.choose(train, fraction=0.25, seed=7)
  listed = tmp_path / "quarter.json"  # the format the protocol itself writes to DIR/lowshot/
  listed.write_text(json.dumps({"ids": ids.tolist(), "num_train_examples": len(train)}))
  overrides = [f"eval.lowshot_files=('{listed}',)"]
  record = evaluate.evaluate(workdir, "lowshot", overrides=overrides)
  (name,) = record["results"]["pretrained"]
  res = record["results"]["pretrained"][name]
  assert name == "quarter" and res["subset_list"] == str(listed) and res["steps"] >= 1
  assert res["train_examples"] == len(ids) and len(tuned) == 1
  np.testing.assert_array_equal(tuned[0], train.images[ids])  # exactly the listed examples
  saved = json.loads(open(res["subset_file"]).read())
  assert saved["ids"] == ids.tolist() and saved["file"] == str(listed)
  labels = np.asarray(train.labels)
  assert saved["per_class"] == np.bincount(labels[ids], minlength=10).tolist()
