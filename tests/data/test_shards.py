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


def test_open_shard_readers_are_bounded(folder_shards, monkeypatch):
  out, _, _ = folder_shards  # 12 examples in shards of 5
  monkeypatch.setattr(shard_format, "MAX_OPEN_READERS", 2)
  src = sources.get_source("shards", "train", data_dir=str(out))
  first = [src.read_example(i)["image"] for i in range(len(src))]
  assert len(src._readers) == 2  # pylint: disable=protected-access
  again = [src.read_example(i)["image"] for i in reversed(range(len(src)))]
  assert again[::-1] == first  # readers closed and reopened read the same records


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


def test_stream_resumes_exactly_at_any_step(folder_shards):
  out, _, _ = folder_shards
  src = sources.get_source("shards", "train", data_dir=str(out))
  whole = list(
    pipeline.train_dataset(src, VIEWS, global_batch=4, seed=2).take(5).as_numpy_iterator()
  )
  late = list(
    pipeline.train_dataset(src, VIEWS, global_batch=4, seed=2, start_step=3)
    .take(2)
    .as_numpy_iterator()
  )
  for a, b in zip(whole[3:], late):
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["views"][0], b["views"][0])


@pytest.mark.slow  # 73 s; tests/test_resume.py covers SIGTERM + resume in the default suite
def test_sigterm_on_shards_then_resume_equals_uninterrupted(folder_shards, tmp_path, devices):
  import jax

  from testkit.configs import tiny_config

  out, _, _ = folder_shards

  def config():
    c = tiny_config()
    c.dataset.name = "shards"
    c.dataset.data_dir = str(out)
    c.dataset.num_train_examples = 0
    c.batch_size = 8
    c.total_steps = 3
    c.checkpoint_every_steps = 100  # only the SIGTERM save and the final save
    c.optimizer.name = "sgd"  # linear in the gradient: float noise stays at 1e-7
    return c

  # (tests/conftest.py shares compiled programs between the three runs.)
  _interrupt_and_resume(config, tmp_path)


def _interrupt_and_resume(config, tmp_path):
  import signal

  import jax

  from sslax import train

  full = train.train(config(), str(tmp_path / "full"))

  def sigterm_at_1(step):
    if step == 1:
      os.kill(os.getpid(), signal.SIGTERM)

  workdir = str(tmp_path / "interrupted")
  first = train.train(config(), workdir, step_hook=sigterm_at_1)
  assert first["status"] == "preempted" and first["step"] == 1
  second = train.train(config(), workdir)
  assert second["status"] == "done" and int(second["state"].step) == 3
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
    jax.device_get(second["state"].params),
    jax.device_get(full["state"].params),
  )


# --------------------------------------------------------------------------------------------
# Captions -> tokens; CLIP's pod config on shards
# --------------------------------------------------------------------------------------------


def _pairs(root, n=6, bad=True) -> list[dict]:
  os.makedirs(root / "img")
  rows = []
  for i in range(n):
    (root / "img" / f"{i}.png").write_bytes(_png(i))
    rows.append({"image": f"img/{i}.png", "caption": f"a picture number {i}"})
  if bad:
    (root / "img" / "bad.png").write_bytes(b"garbage")
    rows.append({"image": "img/bad.png", "caption": "broken"})
  return rows


def test_csv_pairs_and_caption_tokens_in_batches(tmp_path):
  from sslax.data import text

  rows = _pairs(tmp_path)
  with open(tmp_path / "pairs.csv", "w") as f:
    f.write("image,caption\n" + "".join(f"{r['image']},{r['caption']}\n" for r in rows))
  entry = shards.convert("csv", str(tmp_path / "pairs.csv"), str(tmp_path / "out"), shard_size=4)
  assert entry["made"]["skipped_corrupt"] == 1 and "caption" in entry["features"]
  src = sources.get_source("shards", "train", data_dir=str(tmp_path / "out"))
  assert src.captions
  (b,) = list(
    pipeline.train_dataset(src, VIEWS, global_batch=4, seed=0).take(1).as_numpy_iterator()
  )
  tok = text.ByteTokenizer(context_length=77)
  for i, t in zip(b["index"], b["tokens"]):
    np.testing.assert_array_equal(t, tok.encode(src.read_example(int(i))["caption"]))


@pytest.mark.slow  # test budget (2026-11-30): ~45 s
def test_clip_pod_config_trains_on_caption_shards(tmp_path, devices):
  """configs/clip_vitb32_tpu.py at a toy size on generated jsonl -> shards; a record corrupted
  after conversion is replaced at train time and counted."""
  from array_record.python import array_record_module

  from sslax import aot, train

  rows = _pairs(tmp_path, n=8)
  (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = tmp_path / "out"
  entry = shards.convert("jsonl", str(tmp_path / "pairs.jsonl"), str(out), shard_size=4)
  assert entry["made"]["skipped_corrupt"] == 1
  writer = array_record_module.ArrayRecordWriter(
    str(out / "train-00000.array_record"), "group_size:1"
  )
  writer.write(shard_format.encode_example(b"not an image", 0, "broken", key="planted"))
  for i in range(1, 4):
    writer.write(shard_format.encode_example(_png(i), 0, f"a picture number {i}", key=str(i)))
  writer.close()

  c, _ = aot.load_config_file("configs/clip_vitb32_tpu.py")
  c.dataset.name = "shards"
  c.dataset.data_dir = str(out)
  c.dataset.train_size = 0
  c.dataset.image_size = 16
  c.dataset.zero_shot_dataset = ""
  c.model.patch_size = 8
  c.model.variant = "custom"
  c.model.hidden_size, c.model.num_layers, c.model.num_heads = 32, 1, 2
  c.text.width, c.text.depth, c.text.heads, c.text.context_length = 32, 1, 2, 16
  c.clip.embed_dim = 16
  c.batch_size = 8
  c.total_steps = 2
  c.log_every_steps = 1
  c.checkpoint_every_steps = 100
  c.eval.baselines = False
  result = train.train(c, str(tmp_path / "run"))
  assert result["status"] == "done" and result["step"] == 2
  assert np.isfinite(result["metrics"]["loss"])
  assert result["metrics"]["replaced_records"] >= 1

  # The same pairs as WebDataset tars (open_clip's layout), one corrupt member skipped.
  members = {f"{i:03d}.png": _png(i) for i in range(8)}
  members.update({f"{i:03d}.txt": f"a picture number {i}".encode() for i in range(8)})
  members.update({"008.png": b"garbage", "008.txt": b"broken"})
  (tmp_path / "wds").mkdir()
  _tar(tmp_path / "wds" / "part-0.tar", members)
  entry = shards.convert("webdataset", str(tmp_path / "wds"), str(tmp_path / "wds_out"))
  assert entry["made"]["skipped_corrupt"] == 1 and entry["num_examples"] == 8
  c.dataset.data_dir = str(tmp_path / "wds_out")
  result = train.train(c, str(tmp_path / "run_wds"))  # same shapes: the compiled step is reused
  assert result["status"] == "done" and np.isfinite(result["metrics"]["loss"])
