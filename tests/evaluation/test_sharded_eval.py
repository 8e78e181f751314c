"""Evaluation that never holds a whole split in one place: each process reads only its rows, the
features stay row-sharded (`FeatureBank`), the cache is one file per process, the linear probe
gives the same numbers on 8 devices as on 1, and 2 processes give the same as 1."""

import json
import logging
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from sslax import features, sharding
from sslax.data import pipeline
from sslax.data.sources import ArraySource
from sslax.evaluation import features as eval_features
from sslax.evaluation.knn import knn_predict
from sslax.evaluation.linear import linear_probe, linear_probe_sharded

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _source(n, seed=0, size=8):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)
  labels = rng.integers(0, 4, n).astype(np.int32)
  return ArraySource(images, labels, 4, ("a", "b", "c", "d"), "test")


def _count_reads(monkeypatch):
  """Every example id the eval pipeline reads from a random-access source, as it reads it."""
  reads = []
  real = pipeline._example_reader

  def counting(source):
    read = real(source)

    def wrapped(i):
      i = tf.py_function(lambda j: (reads.append(int(j)), j)[1], [i], tf.int64)
      i.set_shape([])
      return read(i)

    return wrapped

  monkeypatch.setattr(pipeline, "_example_reader", counting)
  return reads


def test_each_process_reads_only_its_rows_of_every_batch(monkeypatch):
  src = _source(21)
  reads = _count_reads(monkeypatch)
  seen = {}
  for p in range(2):
    reads.clear()
    batches = list(
      pipeline.eval_batches(src, image_size=8, global_batch=8, process_index=p, process_count=2)
    )
    assert len(batches) == 3  # ceil(21 / 8) on every process
    ids = np.concatenate([b["index"] for b in batches])
    # Process p owns rows [4p, 4p + 4) of global batch j: examples 8j + 4p + r (< 21).
    want = [8 * j + 4 * p + r for j in range(3) for r in range(4)]
    np.testing.assert_array_equal(ids, [i if i < 21 else -1 for i in want])
    assert sorted(reads) == [i for i in want if i < 21]  # read once each, nothing else
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(mask, ids >= 0)
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels[mask], src.labels[ids[mask]])
    seen[p] = set(reads)
  assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(21))


def test_extracted_bank_stays_sharded_and_gathers_to_the_split(devices):
  src = _source(21)
  one = sharding.make_mesh({"data": -1}, devices=devices[:1])
  eight = sharding.make_mesh({"data": -1}, devices=devices)
  kw = dict(image_size=8, batch_size=8, raw_pixels=True)
  want_x, want_y = features.extract_features(None, None, src, mesh=one, **kw)
  bank = features.extract_features(None, None, src, mesh=eight, sharded=True, **kw)
  assert bank.features.shape == (24, 64) and bank.num_examples == 21
  shards = bank.local_shards()
  assert len(shards) == 8
  for d, shard in enumerate(shards):
    # Device d computed row d of each of the 3 batches: examples 8j + d, padding past 20.
    assert shard.rows == range(3 * d, 3 * d + 3)
    np.testing.assert_array_equal(shard.index, [i for i in (d, 8 + d, 16 + d) if i < 21])
    np.testing.assert_array_equal(shard.features, want_x[shard.index])
  x, y = bank.gather()
  np.testing.assert_array_equal(x, want_x)
  np.testing.assert_array_equal(y, want_y)
  np.testing.assert_array_equal(y, src.labels)


def test_sharded_linear_probe_on_8_devices_equals_1_device(devices):
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(203, 12)) * 3 + 50).astype(np.float32)
  y = rng.integers(0, 4, 203)
  x[np.arange(203), y] += 4.0
  kw = dict(num_classes=4, epochs=3, batch_size=32, learning_rate=0.05, val_fraction=0.2)
  want = linear_probe(x[:150], y[:150], x[150:], y[150:], **kw)
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2}, devices=devices)
  train = features.bank_from_arrays(x[:150], y[:150], mesh)
  test = features.bank_from_arrays(x[150:], y[150:], mesh)
  got = linear_probe_sharded(train, test, **kw)
  assert set(got) == set(want)
  assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-6)
  for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
    assert got[key] == want[key]
  assert want["train_accuracy"] > 0.5  # it learned something (the check can fail)


def _bank_calls(src, mesh, batch_size=8):
  calls = []

  def extract(s):
    calls.append(1)
    return features.extract_features(
      None, None, s, image_size=8, batch_size=batch_size, mesh=mesh, raw_pixels=True, sharded=True
    )

  return calls, extract


def test_feature_cache_round_trip_and_another_layout_is_re_extracted(devices, tmp_path, caplog):
  src = _source(21)
  path = str(tmp_path / "features" / "step_3_train.npz")
  meta = {"encoder": "pretrained", "step": 3}
  eight = sharding.make_mesh({"data": -1}, devices=devices)
  calls, extract = _bank_calls(src, eight)
  cached = lambda mesh, meta=meta: eval_features.cached_features(
    extract, src, path=path, meta=meta, mesh=mesh, batch_size=8
  )
  first = cached(eight)
  again = cached(eight)
  assert len(calls) == 1  # the second is read back
  for a, b in zip(first.local_shards(), again.local_shards()):
    assert a.rows == b.rows and a.device == b.device
    for name in ("features", "labels", "index"):
      np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
  with np.load(path, allow_pickle=False) as f:  # only the valid rows, and a JSON index
    assert f["features"].shape == (21, 64) and sorted(f["index_of_rows"]) == list(range(21))
    index = json.loads(str(f["index"]))
  assert index["dim"] == 64 and index["dtype"] == "float32" and index["meta"] == meta
  assert index["layout"]["process_count"] == 1 and len(index["blocks"]) == 8

  caplog.set_level(logging.INFO)
  # absl's own logger too: another test in this worker (sslax.main) may have set it to WARNING.
  caplog.set_level(logging.INFO, logger="absl")
  cached(sharding.make_mesh({"data": -1}, devices=devices[:4]))  # 4 devices: other blocks
  assert len(calls) == 2 and "laid out differently" in caplog.text
  cached(eight, meta=dict(meta, step=4))  # another encoder
  assert len(calls) == 3 and "another encoder" in caplog.text

  # A cache written by 2 processes (process0of2 / process1of2) is not read by 1 process.
  caplog.clear()
  cached(eight)
  os.replace(path, path.replace(".npz", ".process0of2.npz"))
  bank = cached(eight)
  assert len(calls) == 5 and "another process count" in caplog.text
  np.testing.assert_array_equal(bank.gather()[1], src.labels)


def test_cache_identity_names_the_training_subset():
  """Two runs on different subsets of the same size must not share cached train features."""
  import types

  from sslax import config as config_lib

  enc = types.SimpleNamespace(name="pretrained", step=3, image_size=28, preprocessing={})
  config = config_lib.base_config()
  config.dataset.train_split = "train"
  base = {s: eval_features.cache_meta(enc, config, s, 0) for s in ("train", "test")}
  assert "subset" not in base["train"]
  config.dataset.subset_fraction, config.dataset.subset_seed = 0.1, 0
  seed0 = eval_features.cache_meta(enc, config, "train", 0)
  config.dataset.subset_seed = 1
  seed1 = eval_features.cache_meta(enc, config, "train", 0)
  assert seed0 != seed1 != base["train"] and seed0["subset"]["fraction"] == 0.1
  assert eval_features.cache_meta(enc, config, "test", 0) == base["test"]  # not restricted


def test_cache_identity_follows_the_subset_file_contents(tmp_path):
  """An edited list at the same path (same length) must not be served the old list's features."""
  import types

  from sslax import config as config_lib
  from sslax.data import sources

  enc = types.SimpleNamespace(name="pretrained", step=3, image_size=28, preprocessing={})
  config = config_lib.base_config()
  config.dataset.train_split = "train"
  listed = tmp_path / "subset.txt"
  config.dataset.subset_file = str(listed)
  listed.write_text("a.png\nb.png\n")
  first = eval_features.cache_meta(enc, config, "train", 0)
  listed.write_text("a.png\nc.png\n")
  second = eval_features.cache_meta(enc, config, "train", 0)
  assert first["subset"]["file"] == second["subset"]["file"] == str(listed)
  assert first != second
  listed.unlink()
  with pytest.raises(sources.subsets.SubsetError, match="does not exist"):
    eval_features.cache_meta(enc, config, "train", 0)


_WORKER = r"""
import json, sys
pid, nproc, port, out, cache = sys.argv[1:]
pid, nproc = int(pid), int(nproc)
import jax
jax.config.update("jax_default_matmul_precision", "highest")
if nproc > 1:
  jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid,
    initialization_timeout=60,
  )
import numpy as np
import tensorflow as tf
from sslax import features, sharding
from sslax.data import pipeline
from sslax.data.sources import ArraySource
from sslax.evaluation import features as eval_features
from sslax.evaluation.knn import knn_predict_sharded
from sslax.evaluation.linear import linear_probe_sharded

reads = []
real = pipeline._example_reader
def counting(source):
  read = real(source)
  def wrapped(i):
    i = tf.py_function(lambda j: (reads.append(int(j)), j)[1], [i], tf.int64)
    i.set_shape([])
    return read(i)
  return wrapped
pipeline._example_reader = counting

def source(n, seed):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
  return ArraySource(images, rng.integers(0, 4, n).astype(np.int32), 4, tuple("abcd"), "s")

mesh = sharding.make_mesh({"data": -1})
record = {"process": pid}
banks = {}
for split, n, seed in (("train", 37, 1), ("test", 21, 2)):
  reads.clear()
  src = source(n, seed)
  extract = lambda s: features.extract_features(
    None, None, s, image_size=8, batch_size=8, mesh=mesh, raw_pixels=True, sharded=True)
  bank = eval_features.cached_features(
    extract, src, path=f"{cache}/{split}.npz", meta={"split": split}, mesh=mesh, batch_size=8)
  record[split] = {
    "reads": sorted(reads),
    "fully_addressable": bank.features.is_fully_addressable,
    "held": sorted(int(i) for s in bank.local_shards() for i in s.index),
    "labels": bank.gather()[1].tolist(),
  }
  banks[split] = bank
reads.clear()
eval_features.cached_features(None, source(37, 1), path=f"{cache}/train.npz",
  meta={"split": "train"}, mesh=mesh, batch_size=8)  # read back: extract is never called
record["reads_on_cache_hit"] = len(reads)
preds, labels = knn_predict_sharded(banks["train"], banks["test"], num_classes=4, ks=(1, 3, 50),
  batch_size=8)
record["knn"] = preds.tolist()
record["probe"] = linear_probe_sharded(banks["train"], banks["test"], num_classes=4, epochs=2,
  batch_size=8, learning_rate=0.1, val_fraction=0.2)
record["gathered"] = [banks[s].gather()[0].tolist() for s in ("train", "test")]
json.dump(record, open(f"{out}/{pid}.json", "w"))
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_workers(tmp_path, name, num_processes, devices_per_process, timeout=600):
  out, cache = tmp_path / name, tmp_path / f"{name}_cache"
  out.mkdir()
  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  env = dict(
    os.environ,
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
    JAX_PLATFORMS="cpu",
    PYTHONPATH=REPO,
  )
  port = _free_port()
  procs = [
    subprocess.Popen(
      [sys.executable, str(script), str(p), str(num_processes), str(port), str(out), str(cache)],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for p in range(num_processes)
  ]
  try:
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [0] * num_processes, "\n".join(logs)[-4000:]
  records = [json.loads((out / f"{p}.json").read_text()) for p in range(num_processes)]
  return records, sorted(os.listdir(cache))


@pytest.mark.slow  # three fresh jax + tensorflow processes: ~12 s of CPU each
def test_two_processes_read_and_hold_only_their_rows_and_equal_one_process(tmp_path):
  """2 processes x 2 devices and 1 process x 4 devices (the same mesh): each process reads only
  its rows and holds only its shards (in memory and on disk), and kNN predictions and linear-probe
  numbers are the same; the kNN also equals the single-device kNN on the gathered features."""
  two, two_files = _run_workers(tmp_path, "two", 2, 2)
  one, one_files = _run_workers(tmp_path, "one", 1, 4)
  assert two_files == sorted(f"{s}.process{p}of2.npz" for s in ("train", "test") for p in range(2))
  assert one_files == ["test.npz", "train.npz"]
  for split, n in (("train", 37), ("test", 21)):
    for r in two:
      p = r["process"]
      # Process p holds rows [4p, 4p + 4) of each global batch of 8, and read exactly those.
      want = [
        i for j in range(-(-n // 8)) for i in range(8 * j + 4 * p, 8 * j + 4 * p + 4) if i < n
      ]
      assert r[split]["reads"] == r[split]["held"] == want
      assert not r[split]["fully_addressable"]
      with np.load(tmp_path / "two_cache" / f"{split}.process{p}of2.npz", allow_pickle=False) as f:
        assert sorted(f["index_of_rows"].tolist()) == want
    assert one[0][split]["reads"] == list(range(n))
  for r in two + one:
    assert r["reads_on_cache_hit"] == 0
  for r in two:
    assert r["knn"] == one[0]["knn"] and r["probe"] == one[0]["probe"]
    assert r["train"]["labels"] == one[0]["train"]["labels"]
  x_tr, x_te = (np.array(a, np.float32) for a in one[0]["gathered"])
  y_tr, y_te = np.array(one[0]["train"]["labels"]), np.array(one[0]["test"]["labels"])
  for k, got in zip((1, 3, 50), one[0]["knn"]):
    np.testing.assert_array_equal(got, knn_predict(x_tr, y_tr, x_te, num_classes=4, k=k))
  single = linear_probe(
    x_tr,
    y_tr,
    x_te,
    y_te,
    num_classes=4,
    epochs=2,
    batch_size=8,
    learning_rate=0.1,
    val_fraction=0.2,
  )
  # 4 device blocks' float64 statistics are combined, 1 device's are NumPy's own: equal to 1e-15.
  assert one[0]["probe"]["train_loss"] == pytest.approx(single["train_loss"], rel=1e-6)
  for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
    assert one[0]["probe"][key] == single[key]
