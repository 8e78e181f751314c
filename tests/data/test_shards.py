"""Record shards: the converter (image folder, jsonl pairs, WebDataset tars) and `ShardSource`,
random access by global index inside the training stream."""

from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
from PIL import Image
import pytest

from sslax.data import pipeline, shards, sources
from sslax.data.augment import ViewSpec
from sslax.data.sources import shards as shard_format

VIEWS = (ViewSpec(size=8, crop_scale=(0.3, 1.0)),)


def _png(seed: int, size=(10, 12), fmt="PNG") -> bytes:
  pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format=fmt)
  return buf.getvalue()


def _image_folder(root, per_class=4, classes=("cat", "dog", "emu")) -> dict[str, tuple]:
  """root/<class>/<i>.png|jpg plus one corrupt file; -> {key: (bytes, label)} of the good ones."""
  good = {}
  for label, c in enumerate(classes):
    os.makedirs(root / c)
    for i in range(per_class):
      fmt, ext = ("JPEG", "jpg") if i % 2 else ("PNG", "png")
      data = _png(100 * label + i, fmt=fmt)
      (root / c / f"{i}.{ext}").write_bytes(data)
      good[f"{c}/{i}.{ext}"] = (data, label)
  (root / classes[1] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
  return good


@pytest.fixture(scope="module")
def folder_shards(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("folder")
  good = _image_folder(tmp / "in")
  entry = shards.convert("image_folder", str(tmp / "in"), str(tmp / "out"), shard_size=5)
  return tmp / "out", good, entry


def _indices(positions, n, batch, seed):
  return np.array(
    [
      int(pipeline.example_index(p, num_examples=n, global_batch=batch, seed=seed))
      for p in positions
    ]
  )


def _all_examples(source):
  return [source.read_example(i) for i in range(len(source))]


def test_image_folder_round_trip_and_report(folder_shards, capsys):
  out, good, entry = folder_shards
  assert entry["made"]["skipped_corrupt"] == 1
  assert entry["made"]["skipped_first"][0][0] == "dog/broken.png"
  meta = json.loads((out / "metadata.json").read_text())
  assert meta["class_names"] == ["cat", "dog", "emu"]
  assert meta["features"] == ["image", "label"]
  assert meta["splits"]["train"]["made"]["sslax_version"]
  assert [s["num_examples"] for s in meta["splits"]["train"]["shards"]] == [5, 4, 3]

  src = sources.get_source("shards", "train", data_dir=str(out))
  assert isinstance(src, shard_format.ShardSource) and len(src) == 12 and src.num_classes == 3
  examples = _all_examples(src)
  assert {e["key"]: (e["image"], e["label"]) for e in examples} == good  # bytes as they came
  np.testing.assert_array_equal(src.labels, [e["label"] for e in examples])
  assert src.locate(5) == (1, 0) and src.locate(11) == (2, 2)

  # A rerun skips every completed shard and reports the same.
  again = shards.main(
    ["--from", "image_folder", "--input", str(out.parent / "in"), "--output", str(out)]
    + ["--shard_size", "5"]
  )
  assert again == 0
  printed = capsys.readouterr().out
  assert "12 examples in 3 shards" in printed and "3 shards already complete" in printed


def test_interrupted_conversion_resumes(tmp_path, monkeypatch):
  good = _image_folder(tmp_path / "in")
  real = shards._write_shard
  calls = []

  def fail_on_shard_1(output, split, index, items, start):
    calls.append(index)
    if index == 1:
      raise KeyboardInterrupt("interrupted")
    return real(output, split, index, items, start)

  monkeypatch.setattr(shards, "_write_shard", fail_on_shard_1)
  with pytest.raises(KeyboardInterrupt):
    shards.convert(
      "image_folder", str(tmp_path / "in"), str(tmp_path / "out"), shard_size=5, workers=1
    )
  assert (tmp_path / "out" / "train-00000.array_record").exists()
  assert not (tmp_path / "out" / "metadata.json").exists()
  assert not (tmp_path / "out" / "train-00001.array_record").exists()
  (tmp_path / "out" / "train-00001.array_record.tmp").write_bytes(b"half a shard")
  monkeypatch.setattr(shards, "_write_shard", real)
  entry = shards.convert("image_folder", str(tmp_path / "in"), str(tmp_path / "out"), shard_size=5)
  assert sorted(calls) == [0, 1, 2]  # the pool went on with shard 2: only shard 1 is redone
  assert entry["made"]["resumed_shards"] == 2 and entry["num_examples"] == len(good)
  src = sources.get_source("shards", "train", data_dir=str(tmp_path / "out"))
  assert sorted(e["key"] for e in _all_examples(src)) == sorted(good)


def test_jsonl_pairs_keep_captions(tmp_path):
  lines = []
  for i in range(5):
    (tmp_path / f"im{i}.png").write_bytes(_png(i))
    lines.append(json.dumps({"image": f"im{i}.png", "caption": f"picture {i}", "label": i % 2}))
  (tmp_path / "bad.png").write_bytes(b"garbage")
  lines.append(json.dumps({"image": "bad.png", "caption": "broken"}))
  lines.append(json.dumps({"image": "missing.png", "caption": "gone"}))
  (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
  entry = shards.convert("jsonl", str(tmp_path / "pairs.jsonl"), str(tmp_path / "out"))
  assert entry["made"]["skipped_corrupt"] == 2 and entry["features"] == [
    "image",
    "label",
    "caption",
  ]
  src = sources.get_source("shards", "train", data_dir=str(tmp_path / "out"))
  got = [(e["image"], e["label"], e["caption"]) for e in _all_examples(src)]
  assert got == [((tmp_path / f"im{i}.png").read_bytes(), i % 2, f"picture {i}") for i in range(5)]


def _tar(path, members: dict[str, bytes]):
  with tarfile.open(path, "w") as tar:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


def test_webdataset_tars(tmp_path):
  (tmp_path / "wds").mkdir()
  _tar(
    tmp_path / "wds" / "part-0.tar",
    {
      "a/000.jpg": _png(1, fmt="JPEG"),
      "a/000.txt": b"first caption",
      "a/000.cls": b"2",
      "a/001.png": _png(2),
      "a/001.json": json.dumps({"caption": "second", "label": 1}).encode(),
    },
  )
  _tar(
    tmp_path / "wds" / "part-1.tar",
    {"002.png": b"corrupt bytes", "002.txt": b"bad", "003.png": _png(3), "003.txt": b"third"},
  )
  entry = shards.convert("webdataset", str(tmp_path / "wds"), str(tmp_path / "out"), shard_size=2)
  assert entry["made"]["skipped_corrupt"] == 1 and entry["num_examples"] == 3
  src = sources.get_source("shards", "train", data_dir=str(tmp_path / "out"))
  got = [(e["image"], e["label"], e["caption"]) for e in _all_examples(src)]
  assert got == [
    (_png(1, fmt="JPEG"), 2, "first caption"),
    (_png(2), 1, "second"),
    (_png(3), 0, "third"),
  ]


def test_stream_reads_by_index(folder_shards):
  out, _, _ = folder_shards
  src = sources.get_source("shards", "train", data_dir=str(out))
  ds = pipeline.train_dataset(src, VIEWS, global_batch=4, seed=1)
  (b,) = list(ds.take(1).as_numpy_iterator())
  assert b["views"][0].shape == (4, 8, 8, 3)
  np.testing.assert_array_equal(b["label"], src.labels[b["index"]])
  expected = _indices(range(4), 12, 4, 1)
  np.testing.assert_array_equal(b["index"], expected)


def test_a_late_start_reads_only_what_it_yields(folder_shards, monkeypatch):
  out, _, _ = folder_shards
  src = sources.get_source("shards", "train", data_dir=str(out))
  read = []
  real = src.read_record

  def counting(index):
    read.append(int(index))
    return real(index)

  monkeypatch.setattr(src, "read_record", counting)
  start = 10**7
  ds = pipeline.train_dataset(src, VIEWS, global_batch=4, seed=1, start_step=start)
  (b,) = list(ds.take(1).as_numpy_iterator())
  positions = start * 4 + np.arange(4)
  expected = _indices(positions, 12, 4, 1)
  np.testing.assert_array_equal(b["index"], expected)
  # Only this batch and what prefetch ran ahead for: nothing of the 4e7 positions before it.
  assert 4 <= len(read) <= 200, len(read)
  assert set(expected) <= set(read)


def test_a_corrupt_record_is_replaced_and_counted(tmp_path, monkeypatch):
  from array_record.python import array_record_module

  _image_folder(tmp_path / "in", per_class=2, classes=("a", "b"))
  out = tmp_path / "out"
  shards.convert("image_folder", str(tmp_path / "in"), str(out), shard_size=2)
  # Plant a record that parses but does not decode, and one that does not parse, in shard 0.
  path = str(out / "train-00000.array_record")
  writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
  writer.write(shard_format.encode_example(b"not an image", 0, key="planted"))
  writer.write(b"\x00\xffnot a proto")
  writer.close()
  src = sources.get_source("shards", "train", data_dir=str(out))
  assert src.read_image(0).shape == (10, 12, 3)  # records 0 and 1 bad: record 2 instead
  assert src.replaced == 2
  np.testing.assert_array_equal(
    src.read_image(0), np.asarray(Image.open(io.BytesIO(src.read_example(2)["image"])))
  )
  ds = pipeline.train_dataset(src, VIEWS, global_batch=4, seed=0)
  batches = list(ds.take(2).as_numpy_iterator())  # both epochs read records 0 and 1
  assert all(np.isfinite(b["views"][0]).all() for b in batches)
  assert src.replaced >= 2 + 2 * 3  # per epoch: 0 -> 1 -> 2 and 1 -> 2


def test_simclr_trains_on_shards(folder_shards, tmp_path):
  from sslax import train
  from testkit.configs import tiny_config

  out, _, _ = folder_shards
  c = tiny_config()
  c.dataset.name = "shards"
  c.dataset.data_dir = str(out)
  c.dataset.image_size = 16
  c.dataset.num_train_examples = 0
  c.batch_size = 8
  c.total_steps = 2
  result = train.train(c, str(tmp_path / "run"))
  assert result["status"] == "done" and result["step"] == 2
