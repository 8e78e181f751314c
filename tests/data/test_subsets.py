"""Training subsets (`dataset.subset_*`): chosen from labels and names alone on random-access
sources, SimCLR v2's name lists matched by file name, and bad lists rejected with the fix."""

from __future__ import annotations

import io
import json
import os

import numpy as np
from PIL import Image
import pytest

from sslax import config as config_lib
from sslax.data import shards, sources
from sslax.data.sources import folders, subsets
from sslax.data.sources import shards as shard_format
from sslax.data.sources.base import TFDSSource

CLASSES = ("n01440764", "n01443537", "n01484850")


def _png(seed: int) -> bytes:
  pixels = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG")
  return buf.getvalue()


def _imagenet_like_folder(root, per_class=4) -> list[str]:
  """root/train/<wnid>/<wnid>_<i>.JPEG (PNG bytes: decoders sniff the format), ImageNet's
  naming; -> the file names, class by class."""
  names = []
  for label, wnid in enumerate(CLASSES):
    os.makedirs(root / "train" / wnid)
    for i in range(per_class):
      name = f"{wnid}_{1000 + 7 * i}.JPEG"
      (root / "train" / wnid / name).write_bytes(_png(10 * label + i))
      names.append(name)
  return names


def _config(name: str, data_dir: str = "", **subset):
  c = config_lib.base_config("simclr")
  c.dataset.name = name
  c.dataset.data_dir = data_dir
  for key, value in subset.items():
    c.dataset[f"subset_{key}"] = value
  return c


def _per_class_scan(labels, fraction, num_classes, seed):
  """The subset as first written (one scan of the labels per class): the reference that the
  sorted-by-label version must reproduce id for id (saved subsets stay valid)."""
  counts = np.bincount(labels, minlength=num_classes)
  rng = np.random.default_rng(seed)
  take = np.floor(fraction * counts).astype(np.int64)
  extra = int(round(fraction * labels.size)) - int(take.sum())
  remainder = fraction * counts - take
  if extra > 0:
    for c in np.lexsort((rng.permutation(num_classes), -remainder))[:extra]:
      take[c] += remainder[c] > 0
  take = np.where((counts > 0) & (take == 0), 1, take)
  picks = [
    rng.choice(np.flatnonzero(labels == c), int(take[c]), replace=False)
    for c in range(num_classes)
    if take[c]
  ]
  return np.sort(np.concatenate(picks))


def test_class_balanced_subset_is_the_per_class_draw():
  rng = np.random.default_rng(0)
  for n, k, fraction in ((1000, 10, 0.1), (3000, 37, 0.013), (50, 5, 1.0)):
    labels = rng.integers(0, k, n)
    got = subsets.class_balanced_subset(labels, fraction, num_classes=k, seed=3)
    np.testing.assert_array_equal(got, _per_class_scan(labels, fraction, k, 3))


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("subset_shards")
  names = _imagenet_like_folder(tmp)
  shards.convert("image_folder", str(tmp / "train"), str(tmp / "shards"), shard_size=5)
  return tmp / "shards", names


def test_a_subset_of_record_shards_reads_no_record(shard_dir, monkeypatch, capsys):
  out, names = shard_dir
  reads = []
  monkeypatch.setattr(
    shard_format.ShardSource, "read_record", lambda self, i: reads.append(i) or b""
  )
  full = sources.load_source(_config("shards", str(out)), "train")
  src = sources.load_source(_config("shards", str(out), fraction=0.5, seed=1), "train")
  assert len(full) == 12 and len(src) == 6 and reads == [] and src.reads == 0
  assert np.bincount(src.labels, minlength=3).tolist() == [2, 2, 2]
  np.testing.assert_array_equal(src.labels, full.labels[src.index_map])
  assert (
    "training subset: 6 of 12 examples, a class-balanced 50% (seed 1)" in capsys.readouterr().out
  )
  # By name: the shards' keys (class/file, from the conversion) hold the file names.
  wanted = [names[1], names[6], names[11]]
  listed = out.parent / "list.txt"
  listed.write_text("\n".join(wanted) + "\n")
  src = sources.load_source(_config("shards", str(out), file=str(listed)), "train")
  assert reads == [] and [os.path.basename(k) for k in src.example_names()] == wanted
  assert src.labels.tolist() == [0, 1, 2]


def test_simclr_list_picks_folder_files_by_name_and_checks_only_those(
  tmp_path, monkeypatch, capsys
):
  names = _imagenet_like_folder(tmp_path)
  listed = tmp_path / "1percent.txt"
  # SimCLR's format (one file name per line, any order); a class/file entry works too.
  listed.write_text(f"{names[9]}\n{names[0]}\n\n{CLASSES[1]}/{names[5]}\n")
  checked = []
  real = folders.check_image_file
  monkeypatch.setattr(folders, "check_image_file", lambda p: checked.append(p) or real(p))
  src = sources.load_source(_config("image_folder", str(tmp_path), file=str(listed)), "train")
  assert [os.path.basename(p) for p in src.paths] == [names[0], names[5], names[9]]
  assert src.labels.tolist() == [0, 1, 2]
  assert sorted(checked) == sorted(src.paths)  # 3 files opened, not the folder's 12
  printed = capsys.readouterr().out
  assert f"training subset: 3 of 12 examples, {listed} (every entry matched)" in printed
  # Only dataset.train_split is restricted: the test split is read whole.
  os.makedirs(tmp_path / "test" / CLASSES[0])
  for i in range(2):
    (tmp_path / "test" / CLASSES[0] / f"t{i}.png").write_bytes(_png(99 + i))
  c = _config("image_folder", str(tmp_path), file=str(listed))
  assert len(sources.load_source(c, "test")) == 2


def test_the_lowshot_protocols_ids_file_gives_the_same_subset(tmp_path):
  _imagenet_like_folder(tmp_path)
  c = _config("image_folder", str(tmp_path), fraction=0.5, seed=4)
  drawn = sources.load_source(c, "train")
  whole = sources.load_source(_config("image_folder", str(tmp_path)), "train")
  _, info = subsets.choose(whole, fraction=0.5, seed=4)
  saved = tmp_path / "subset.json"
  saved.write_text(json.dumps({"num_train_examples": 12, "ids": info["ids"]}))
  again = sources.load_source(_config("image_folder", str(tmp_path), file=str(saved)), "train")
  np.testing.assert_array_equal(again.paths, drawn.paths)


def test_bad_lists_and_sources_without_names_are_clear_errors(tmp_path):
  names = _imagenet_like_folder(tmp_path)
  listed = tmp_path / "list.txt"

  def load(text=None, **subset):
    if text is not None:
      listed.write_text(text)
      subset = {"file": str(listed)}
    return sources.load_source(_config("image_folder", str(tmp_path), **subset), "train")

  with pytest.raises(subsets.SubsetError, match=r"2 of 4 entries matched; 2 match no example") as e:
    load(f"{names[0]}\nn09999999_1.JPEG\n{names[3]}\nn09999999_2.JPEG\n")
  assert "n09999999_1.JPEG" in str(e.value) and "dataset.train_split" in str(e.value)
  with pytest.raises(subsets.SubsetError, match="listed more than once"):
    load(f"{names[0]}\n{names[0]}\n")
  with pytest.raises(subsets.SubsetError, match="lists no example names"):
    load("# only a comment\n\n")
  with pytest.raises(subsets.SubsetError, match="does not exist"):
    load(file=str(tmp_path / "missing.txt"))
  with pytest.raises(subsets.SubsetError, match=r"not both"):
    load(fraction=0.1, file=str(listed))
  (tmp_path / "ids.json").write_text(json.dumps({"ids": [0, 12]}))
  with pytest.raises(subsets.SubsetError, match=r"ids must lie in \[0, 12\)"):
    load(file=str(tmp_path / "ids.json"))
  listed.write_text(names[0])
  with pytest.raises(subsets.SubsetError, match="has none"):  # in-memory data has no names
    sources.load_source(_config("fake", file=str(listed)), "train")
  stream = TFDSSource("imagenet2012", "train", None, 1281167, 1000, ())
  with pytest.raises(subsets.SubsetError, match="imagenet2012_subset/1pct"):
    subsets.choose(stream, fraction=0.01)


def test_shards_written_without_a_names_file_say_how_to_add_it(shard_dir, tmp_path):
  out, names = shard_dir
  old = tmp_path / "old"
  old.mkdir()
  meta = json.loads((out / "metadata.json").read_text())
  del meta["splits"]["train"]["keys_file"]
  (old / "metadata.json").write_text(json.dumps(meta))
  for f in out.iterdir():
    if f.name.endswith((".array_record", ".npy")):
      (old / f.name).symlink_to(f)
  (tmp_path / "l.txt").write_text(names[0])
  with pytest.raises(ValueError, match="Rerun the conversion"):
    sources.load_source(_config("shards", str(old), file=str(tmp_path / "l.txt")), "train")
