"""Convert images into a record-shard dataset (read back by `dataset.name="shards"`).

  python -m sslax.data.shards --from image_folder --input DIR --output OUT [--split train]
      [--shard_size 1024] [--workers 8]

Inputs (`--from`):
  image_folder  DIR/<class>/**/*.{png,jpg,jpeg}: one label per class sub-directory (sorted).
  jsonl         a .jsonl file of {"image": path, "caption": str[, "label": int]} lines, the format
                of the `image_text_pairs` dataset (relative image paths are relative to the file).
  csv           the same pairs as a .csv file with the header image,caption[,label].
  tfds          a prepared TFDS dataset: --input NAME, --split one of its splits (written under
                that name), --tfds_data_dir where it is prepared; images are copied as they are
                encoded in TFDS (datasets prepared in ArrayRecord format need no conversion:
                dataset.name=NAME reads them in place by random access).
  webdataset    a .tar file, or a directory of .tar files (sorted): members sharing a key
                (`dir/name` before the first dot of the file name) make one example: the image
                from .jpg/.jpeg/.png, the caption from .txt (or "caption"/"text" of .json), the
                label from .cls (or "label" of .json).

The output layout is described in sslax/data/sources/shards.py. Input example j goes to shard
j // shard_size, so shards are independent: `--workers` write them in parallel, each is written
to a temporary name and renamed when complete, and a rerun after an interruption skips the
completed ones. Inputs whose bytes do not decode as an image (or cannot be read) are skipped and
counted; the report (counts, the first skipped inputs and why) goes into metadata.json and is
printed. Splits are converted one run each into the same output directory.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import datetime
import json
import os
import re
import sys
import tarfile
from typing import Sequence

from etils import epath
import numpy as np

import sslax
from sslax.data.sources import folders
from sslax.data.sources import shards as shard_format
from sslax.data.sources import tfds as tfds_sources

SIDECAR_SUFFIX = ".json"  # <shard>.json: what a completed shard holds (read on resume)
MAX_REPORTED = 20  # skipped inputs listed by name in the report
WEBDATASET_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png")


@dataclasses.dataclass(frozen=True)
class Item:
  """One input example: where its image bytes are, its label and caption."""

  key: str
  path: str
  label: int
  caption: str = ""
  offset: int = -1  # >= 0: the image is `size` bytes at `offset` of the file (a tar member)
  size: int = -1
  tfds_split: str = ""  # a TFDS example: `path` is the dataset name, `offset` its index

  def read(self) -> bytes:
    with epath.Path(self.path).open("rb") as f:
      if self.offset < 0:
        return f.read()
      f.seek(self.offset)
      return f.read(self.size)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def image_folder_items(root: str) -> tuple[list[Item], tuple[str, ...]]:
  classes = folders.list_class_dirs(root)
  if not classes:
    raise FileNotFoundError(f"{root}: no class sub-directories (want {root}/<class>/*.png|jpg).")
  items = []
  for label, c in enumerate(classes):
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, c)):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
      for fn in sorted(filenames):
        if fn.lower().endswith(folders.IMAGE_EXTENSIONS):
          path = os.path.join(dirpath, fn)
          items.append(Item(key=os.path.relpath(path, root), path=path, label=label))
  return items, tuple(classes)


def _pair_item(base: str, row: dict, where: str) -> Item:
  if "image" not in row or "caption" not in row:
    raise ValueError(f"{where}: needs the keys 'image' and 'caption'.")
  try:
    label = int(row.get("label") or 0)
  except (TypeError, ValueError):
    raise ValueError(f"{where}: label {row.get('label')!r} is not an integer.") from None
  return Item(
    key=str(row["image"]),
    path=os.path.join(base, os.path.expanduser(str(row["image"]))),
    label=label,
    caption=str(row["caption"] or ""),
  )


def jsonl_items(path: str) -> tuple[list[Item], tuple[str, ...]]:
  """The pairs of an `image_text_pairs` .jsonl file (missing images are skipped when read)."""
  base = (
    os.path.dirname(os.path.abspath(path)) if "://" not in path else str(epath.Path(path).parent)
  )
  items = []
  with epath.Path(path).open("r") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{line_no}: not a JSON object ({e}).") from None
      if not isinstance(row, dict):
        raise ValueError(f"{path}:{line_no}: not a JSON object.")
      items.append(_pair_item(base, row, f"{path}:{line_no}"))
  if not items:
    raise ValueError(f"{path}: no (image, caption) pairs.")
  return items, _numbered_classes(items)


def csv_items(path: str) -> tuple[list[Item], tuple[str, ...]]:
  """The pairs of an `image_text_pairs` .csv file (header image,caption[,label])."""
  base = (
    os.path.dirname(os.path.abspath(path)) if "://" not in path else str(epath.Path(path).parent)
  )
  with epath.Path(path).open("r") as f:
    reader = csv.DictReader(f)
    items = [_pair_item(base, row, f"{path}:{n}") for n, row in enumerate(reader, 2)]
  if not items:
    raise ValueError(f"{path}: no (image, caption) pairs.")
  return items, _numbered_classes(items)


def tfds_items(name: str, split: str, data_dir: str | None) -> tuple[list[Item], tuple[str, ...]]:
  """The examples of split `split` of the prepared TFDS dataset `name` (labels read later)."""
  builder, note = tfds_sources.tfds_builder(name, data_dir)
  if builder is None:
    raise FileNotFoundError(f"{note}: prepare it first (`tfds build {name}`).")
  if split not in builder.info.splits:
    raise ValueError(f"TFDS {name} has no split {split!r} ({', '.join(builder.info.splits)}).")
  label = builder.info.features["label"] if "label" in builder.info.features else None
  names = tuple(label.names) if label is not None else ("class_0",)
  n = int(builder.info.splits[split].num_examples)
  items = [
    Item(key=f"{name}/{split}/{i}", path=name, label=-1, offset=i, tfds_split=split)
    for i in range(n)
  ]
  _TFDS_DIRS[name] = data_dir
  return items, names


_TFDS_DIRS: dict[str, str | None] = {}  # dataset name -> its --tfds_data_dir (this conversion)


def _read_tfds(items: Sequence[Item]):
  """Consecutive TFDS items -> [(item with its label, image bytes or an OSError)], one read of
  the slice [first, last] of the split (the image left encoded as TFDS stores it)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  first, name, split = items[0].offset, items[0].path, items[0].tfds_split
  builder = tfds.builder(name, data_dir=_TFDS_DIRS.get(name))
  decoders = {"image": tfds.decode.SkipDecoding()}
  if tfds_sources.is_array_record(builder):  # random access (TFRecord: one sliced stream)
    data = builder.as_data_source(split=split, decoders=decoders)
    examples = (data[it.offset] for it in items)
  else:
    examples = tfds.as_numpy(
      builder.as_dataset(
        split=f"{split}[{first}:{items[-1].offset + 1}]", shuffle_files=False, decoders=decoders
      )
    )
  out = []
  for item, ex in zip(items, examples):
    label = int(ex["label"]) if "label" in ex else 0
    # The dataset's own file name where it has one (imagenet2012: n01440764_10026.JPEG), so the
    # shards' keys name examples as SimCLR's subset lists do.
    name = ex.get("file_name") if hasattr(ex, "get") else None
    key = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name or item.key)
    out.append((dataclasses.replace(item, label=label, key=key), bytes(ex["image"])))
  return out


def webdataset_items(path: str) -> tuple[list[Item], tuple[str, ...]]:
  """The samples of a WebDataset tar (or a folder of them), the tars listed in parallel."""
  p = epath.Path(path)
  tars = sorted(str(t) for t in p.glob("*.tar")) if p.is_dir() else [str(p)]
  if not tars:
    raise FileNotFoundError(f"{path}: no .tar files.")
  with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(tars))) as pool:
    items = [item for listed in pool.map(_tar_items, tars) for item in listed]
  if not items:
    raise ValueError(f"{path}: no samples in {len(tars)} tar files.")
  return items, _numbered_classes(items)


def _tar_items(tar_path: str) -> list[Item]:
  """One pass over the members of one tar: image offsets, captions and labels by sample key."""
  items = []
  samples: dict[str, dict] = {}
  with epath.Path(tar_path).open("rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
    for m in tar:
      if not m.isfile():
        continue
      dirname, base = os.path.split(m.name)
      if base.startswith("."):
        continue
      stem, _, ext = base.partition(".")
      sample = samples.setdefault(os.path.join(dirname, stem), {})
      ext = ext.lower()
      if ext in WEBDATASET_IMAGE_EXTENSIONS and "image" not in sample:
        sample["image"] = (m.offset_data, m.size)
      elif ext in ("txt", "json", "cls"):
        sample[ext] = tar.extractfile(m).read().decode("utf-8", "replace")
  for key, s in samples.items():
    meta = {}
    if "json" in s:
      try:
        meta = json.loads(s["json"])
      except ValueError:
        meta = {}
      meta = meta if isinstance(meta, dict) else {}
    caption = s.get("txt", "").strip() or str(meta.get("caption") or meta.get("text") or "")
    label = s.get("cls", "").strip() or meta.get("label") or 0
    offset, size = s.get("image", (-1, -1))
    items.append(
      Item(
        key=f"{os.path.basename(tar_path)}:{key}",
        path=tar_path,
        label=int(label),
        caption=caption,
        offset=offset,
        size=size if offset >= 0 else 0,  # no image member: read() gives b"" (skipped)
      )
    )
  return items


def _numbered_classes(items: Sequence[Item]) -> tuple[str, ...]:
  return tuple(f"class_{i}" for i in range(max(it.label for it in items) + 1))


READERS = {
  "image_folder": image_folder_items,
  "jsonl": jsonl_items,
  "csv": csv_items,
  "webdataset": webdataset_items,
  "tfds": tfds_items,
}


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def check_image_bytes(data: bytes) -> str | None:
  """None if TensorFlow decodes `data` as an image (as the training pipeline will), else why."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (slow import, only here)

  if not data:
    return "empty"
  try:
    tf.io.decode_image(data, channels=3, expand_animations=False)
  except (tf.errors.OpError, ValueError) as e:
    why = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]", "", str(e).splitlines()[0])
    return f"{type(e).__name__}: {why[:200]}"
  return None


def _read_items(items: Sequence[Item]):
  """-> [(item, its image bytes, or the OSError that reading raised)]."""
  if items and items[0].tfds_split:
    return _read_tfds(items)
  out = []
  for item in items:
    try:
      out.append((item, item.read()))
    except OSError as e:
      out.append((item, e))
  return out


def _write_shard(output: epath.Path, split: str, index: int, items: Sequence[Item], start: int):
  """Writes shard `index` (inputs [start, start + len(items))) unless it is complete already.

  -> its sidecar dict: num_examples, labels, keys, captions present, skipped [[key, why]].
  """
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  final = output / shard_format.shard_file_name(split, index)
  sidecar = output / (final.name + SIDECAR_SUFFIX)
  if final.exists() and sidecar.exists():
    done = json.loads(sidecar.read_text())
    if (done["first_input"], done["num_inputs"]) != (start, len(items)):
      raise ValueError(
        f"{final} was made from inputs [{done['first_input']}, +{done['num_inputs']}), not "
        f"[{start}, +{len(items)}): rerun with the same --shard_size, or use a new --output."
      )
    done["resumed"] = True
    if "keys" not in done:  # a shard written before keys were recorded: its inputs, in order
      dropped = {key for key, _ in done["skipped"]}
      done["keys"] = [it.key for it in items if it.key not in dropped][: done["num_examples"]]
    return done
  labels, keys, skipped, captions = [], [], [], False
  tmp = output / (final.name + ".tmp")
  writer = array_record_module.ArrayRecordWriter(str(tmp), "group_size:1")  # random access
  try:
    for item, data in _read_items(items):
      if isinstance(data, OSError):
        problem = f"{type(data).__name__}: {data}"
      else:
        problem = check_image_bytes(data)
      if problem:
        skipped.append([item.key, problem])
        continue
      writer.write(shard_format.encode_example(data, item.label, item.caption, item.key))
      labels.append(item.label)
      keys.append(item.key)
      captions = captions or bool(item.caption)
  finally:
    writer.close()
  done = {
    "first_input": start,
    "num_inputs": len(items),
    "num_examples": len(labels),
    "labels": labels,
    "keys": keys,
    "captions": captions,
    "skipped": skipped,
  }
  tmp_sidecar = output / (sidecar.name + ".tmp")
  tmp_sidecar.write_text(json.dumps(done))
  tmp_sidecar.replace(sidecar)
  tmp.replace(final)  # last: a shard under its final name is complete
  return done


def _class_mapping(old: Sequence[str], new: Sequence[str]) -> tuple[tuple[str, ...], list[int]]:
  """-> (the dataset's class names, new label -> dataset label): splits share class ids."""
  if not old:
    return tuple(new), list(range(len(new)))
  missing = [c for c in new if c not in old]
  if missing:
    raise ValueError(
      f"classes {missing[:5]} are not in the dataset's class names {list(old)[:10]}...: convert "
      f"the split with every class first (class ids are shared by all splits)."
    )
  return tuple(old), [list(old).index(c) for c in new]


def convert(
  source: str,
  input_path: str,
  output: str,
  *,
  split: str = "train",
  shard_size: int = 1024,
  workers: int = 4,
  tfds_data_dir: str | None = None,
) -> dict:
  """Converts one split; -> the split's entry of metadata.json (with its "made" report)."""
  if source not in READERS:
    raise ValueError(f"--from must be one of {sorted(READERS)}, got {source!r}")
  if shard_size < 1:
    raise ValueError(f"shard_size must be >= 1, got {shard_size}")
  out = epath.Path(output)
  out.mkdir(parents=True, exist_ok=True)
  meta_path = out / shard_format.METADATA_FILE
  meta = {
    "format": shard_format.FORMAT,
    "format_version": shard_format.FORMAT_VERSION,
    "features": [],
    "class_names": [],
    "splits": {},
  }
  if meta_path.exists():
    meta = shard_format.read_metadata(output)
  if source == "tfds":
    items, class_names = tfds_items(input_path, split, tfds_data_dir)
  else:
    items, class_names = READERS[source](input_path)
  meta["class_names"], to_dataset = _class_mapping(meta["class_names"], class_names)
  if source == "tfds":  # labels are read with the images: TFDS's class ids are the dataset's
    if list(to_dataset) != list(range(len(class_names))):
      raise ValueError(f"{output}: its class names differ from TFDS {input_path}'s.")
  else:
    items = [dataclasses.replace(it, label=to_dataset[it.label]) for it in items]

  starts = range(0, len(items), shard_size)
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
    done = list(
      pool.map(
        lambda k_s: _write_shard(out, split, k_s[0], items[k_s[1] : k_s[1] + shard_size], k_s[1]),
        enumerate(starts),
      )
    )
  labels = np.asarray([y for d in done for y in d["labels"]], np.int32)
  labels_file = shard_format.labels_file_name(split)
  with (out / (labels_file + ".tmp")).open("wb") as f:
    np.save(f, labels, allow_pickle=False)
  (out / (labels_file + ".tmp")).replace(out / labels_file)
  # One name per line, in example order (a newline inside a key would shift every later one).
  keys_file = shard_format.keys_file_name(split)
  keys = [str(k).replace("\n", " ").replace("\r", " ") for d in done for k in d["keys"]]
  (out / (keys_file + ".tmp")).write_text("".join(k + "\n" for k in keys), encoding="utf-8")
  (out / (keys_file + ".tmp")).replace(out / keys_file)

  skipped = [s for d in done for s in d["skipped"]]
  features = ["image", "label"] + (["caption"] if any(d["captions"] for d in done) else [])
  entry = {
    "num_examples": int(len(labels)),
    "features": features,
    "labels_file": labels_file,
    "keys_file": keys_file,
    "shards": [
      {"file": shard_format.shard_file_name(split, k), "num_examples": d["num_examples"]}
      for k, d in enumerate(done)
      if d["num_examples"]
    ],
    "made": {
      "from": source,
      "input": str(input_path),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "sslax_version": sslax.__version__,
      "shard_size": shard_size,
      "num_inputs": len(items),
      "skipped_corrupt": len(skipped),
      "skipped_first": skipped[:MAX_REPORTED],
      "resumed_shards": sum(bool(d.get("resumed")) for d in done),
    },
  }
  if not entry["shards"]:
    raise ValueError(f"{input_path}: none of the {len(items)} inputs decodes as an image.")
  meta["splits"][split] = entry
  meta["features"] = [
    f for f in shard_format.FEATURES if any(f in s["features"] for s in meta["splits"].values())
  ]
  (out / (shard_format.METADATA_FILE + ".tmp")).write_text(json.dumps(meta, indent=1))
  (out / (shard_format.METADATA_FILE + ".tmp")).replace(meta_path)
  return entry


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m sslax.data.shards", description=__doc__.split("\n\n")[0]
  )
  parser.add_argument("--from", dest="source", required=True, choices=sorted(READERS))
  parser.add_argument("--input", required=True, help="folder, .jsonl file, or .tar / tar folder")
  parser.add_argument("--output", required=True, help="the shard dataset directory")
  parser.add_argument("--split", default="train")
  parser.add_argument("--shard_size", type=int, default=1024, help="inputs per shard")
  parser.add_argument("--workers", type=int, default=4, help="shards written in parallel")
  parser.add_argument("--tfds_data_dir", default=None, help="--from tfds: TFDS's data dir")
  args = parser.parse_args(argv)
  entry = convert(
    args.source,
    args.input,
    args.output,
    split=args.split,
    shard_size=args.shard_size,
    workers=args.workers,
    tfds_data_dir=args.tfds_data_dir,
  )
  made = entry["made"]
  print(
    f"{args.output}: split {args.split!r}: {entry['num_examples']} examples in "
    f"{len(entry['shards'])} shards from {made['num_inputs']} inputs; skipped "
    f"{made['skipped_corrupt']} corrupt; {made['resumed_shards']} shards already complete."
  )
  print(json.dumps(made, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
