"""TFDS datasets prepared in ArrayRecord format are read in place by random access, on the same
(seed, position) stream as record shards; TFRecord-format ones stream with a warning."""

from __future__ import annotations

import numpy as np
import pytest

from sslax.data import pipeline, sources
from sslax.data.augment import ViewSpec
from sslax.data.sources import tfds as tfds_sources

tfds = pytest.importorskip("tensorflow_datasets")

VIEWS = (ViewSpec(size=8, crop_scale=(0.3, 1.0)),)
N = 12


class SslaxTinyRecords(tfds.core.GeneratorBasedBuilder):
  """12 images of variable size (so TFDS cannot hold them as one array), 3 classes."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3)),
          "label": tfds.features.ClassLabel(num_classes=3),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(N):
      yield i, {"image": np.full((6 + i % 3, 7, 3), 10 * i, np.uint8), "label": i % 3}


def _prepare(data_dir, file_format):
  builder = SslaxTinyRecords(data_dir=str(data_dir), file_format=file_format)
  builder.download_and_prepare()
  return str(data_dir)


@pytest.fixture(scope="module")
def array_record_dir(tmp_path_factory):
  return _prepare(tmp_path_factory.mktemp("tfds_ar"), "array_record")


def _batches(src, **kw):
  ds = pipeline.train_dataset(src, VIEWS, global_batch=4, seed=1, **kw)
  return list(ds.take(2).as_numpy_iterator())


def test_array_record_tfds_is_read_by_index(array_record_dir):
  src = sources.get_source("sslax_tiny_records", "train", data_dir=array_record_dir)
  assert isinstance(src, tfds_sources.TFDSRecordSource) and len(src) == N
  # Generated example k is a constant image of value 10 k, label k % 3 (TFDS stores them in its
  # own shuffled order).
  keys = []
  for i in range(N):
    image, label, index, _ = src.read(i)
    k = int(image[0, 0, 0]) // 10
    assert image.shape == (6 + k % 3, 7, 3) and (image == 10 * k).all()
    assert (label, index) == (k % 3, i)
    keys.append(k)
  assert sorted(keys) == list(range(N))
  np.testing.assert_array_equal(src.labels, np.asarray(keys) % 3)

  (b, _) = _batches(src)
  expected = [
    int(pipeline.example_index(p, num_examples=N, global_batch=4, seed=1)) for p in range(4)
  ]
  np.testing.assert_array_equal(b["index"], expected)
  np.testing.assert_array_equal(b["label"], src.labels[expected])  # labels ride with images


def test_array_record_tfds_late_start_and_processes(array_record_dir):
  src = sources.get_source("sslax_tiny_records", "train", data_dir=array_record_dir)
  start = 10**7
  late = _batches(src, start_step=start)
  # Only the yielded batches and what prefetch ran ahead for: nothing of the 4e7 before them.
  assert 8 <= src.reads <= 200, src.reads
  expected = [
    int(pipeline.example_index(start * 4 + p, num_examples=N, global_batch=4, seed=1))
    for p in range(4)
  ]
  np.testing.assert_array_equal(late[0]["index"], expected)

  one = _batches(src)
  halves = [_batches(src, process_index=p, process_count=2) for p in (0, 1)]
  for g, a, b in zip(one, *halves):
    np.testing.assert_array_equal(g["index"], np.concatenate([a["index"], b["index"]]))
    np.testing.assert_array_equal(g["views"][0], np.concatenate([a["views"][0], b["views"][0]]))


def test_tfrecord_tfds_streams_with_a_warning_naming_the_fix(tmp_path, monkeypatch):
  data_dir = _prepare(tmp_path, "tfrecord")
  warnings = []
  monkeypatch.setattr(
    tfds_sources.logging, "warning", lambda msg, *args: warnings.append(msg % args)
  )
  src = sources.get_source("sslax_tiny_records", "train", data_dir=data_dir)
  assert isinstance(src, sources.TFDSSource)
  assert any("--file_format=array_record" in w and "sslax.data.shards" in w for w in warnings)


def test_converter_reads_a_tfds_dataset(array_record_dir, tmp_path):
  from sslax.data import shards

  entry = shards.convert(
    "tfds", "sslax_tiny_records", str(tmp_path / "out"), tfds_data_dir=array_record_dir
  )
  assert entry["num_examples"] == N and entry["made"]["skipped_corrupt"] == 0
  src = sources.get_source("shards", "train", data_dir=str(tmp_path / "out"))
  tfds_src = sources.get_source("sslax_tiny_records", "train", data_dir=array_record_dir)
  np.testing.assert_array_equal(src.labels, tfds_src.labels)  # TFDS's order, kept
  for i in (0, 4, 11):  # the PNG bytes TFDS stored, decoded
    np.testing.assert_array_equal(src.read_image(i), tfds_src.read_image(i))
