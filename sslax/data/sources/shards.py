"""shards: a record-shard dataset directory, read by global example index (`ShardSource`).

Layout of `dataset.data_dir` (written by `python -m sslax.data.shards`, see sslax/data/shards.py):

  metadata.json                   format version, features, class names, and per split: its
                                  shards in order with their example counts, its labels file
                                  and how it was made (source, input, date, sslax version,
                                  skipped corrupt inputs)
  <split>-00000.array_record      ArrayRecord shards: one serialized `tf.train.Example` per
  <split>-00001.array_record      example: "image" (the encoded JPEG/PNG bytes exactly as they
  ...                             came), "label" (int64), "caption" (bytes, may be empty) and
                                  "key" (where the example came from)
  <split>-labels.npy              int32 [N]: every label of the split, in order (no pickle)
  <split>-keys.txt                UTF-8, one line per example, in order: its "key" (the input's
                                  relative path, TFDS's file_name, a WebDataset sample key), so
                                  a subset can be named by file (`subsets.py`) without reading a
                                  record; absent in shards written before 2026-11-30

Global example index i lives in shard s = searchsorted(cumulative counts, i) at offset
i - start[s], so a training run reads exactly the records of its positions (random access:
resuming at any step costs nothing). A record that cannot be read, parsed or decoded at train
time is replaced by the next valid index (deterministic), counted in `ShardSource.replaced`
and logged; the run goes on. Paths go through `etils.epath`, so `gs://` data dirs work where
the ArrayRecord reader can open them.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import numpy as np

from sslax.data.sources import registry
from sslax.data.sources.base import CorruptDatasetError, DatasetNotFoundError, Source
from sslax.data.sources.records import RecordSource

FORMAT = "sslax.shards"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
FEATURES = ("image", "label", "caption")
_READER_OPTIONS = "readahead_buffer_size:0,max_parallelism:0"  # random access
MAX_OPEN_READERS = 64  # shard readers kept open per source (each holds its shard's index)


class CorruptRecordError(ValueError):
  """A record that cannot be parsed, or whose image bytes do not decode."""


def shard_file_name(split: str, index: int) -> str:
  return f"{split}-{index:05d}.array_record"


def labels_file_name(split: str) -> str:
  return f"{split}-labels.npy"


def keys_file_name(split: str) -> str:
  return f"{split}-keys.txt"


def encode_example(image: bytes, label: int, caption: str | bytes = b"", key: str = "") -> bytes:
  """One record: a serialized tf.train.Example (image bytes as given, no re-encoding)."""
  from tensorflow.core.example import example_pb2, feature_pb2  # pylint: disable=g-import-not-at-top

  if isinstance(caption, str):
    caption = caption.encode("utf-8")

  def b(v):
    return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[v]))

  features = {
    "image": b(bytes(image)),
    "label": feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[int(label)])),
    "caption": b(caption),
    "key": b(key.encode("utf-8")),
  }
  return example_pb2.Example(features=feature_pb2.Features(feature=features)).SerializeToString()


def decode_example(record: bytes) -> dict:
  """A record -> {"image": bytes, "label": int, "caption": str, "key": str}.

  Raises CorruptRecordError when it is not such an Example.
  """
  from tensorflow.core.example import example_pb2  # pylint: disable=g-import-not-at-top

  try:
    f = example_pb2.Example.FromString(record).features.feature
    image = f["image"].bytes_list.value[0]
    label = int(f["label"].int64_list.value[0])
  except Exception as e:  # pylint: disable=broad-except  (protobuf raises its own DecodeError)
    raise CorruptRecordError(f"not an sslax shard record: {type(e).__name__}: {e}") from None

  def text(name):
    v = f[name].bytes_list.value if name in f else []
    return v[0].decode("utf-8", "replace") if v else ""

  return {"image": image, "label": label, "caption": text("caption"), "key": text("key")}


def read_metadata(data_dir: str) -> dict:
  """metadata.json of a shard dataset (DatasetNotFoundError / CorruptDatasetError if unusable)."""
  from etils import epath  # pylint: disable=g-import-not-at-top

  path = epath.Path(data_dir) / METADATA_FILE
  if not path.exists():
    raise DatasetNotFoundError(
      f"shards: no {path}; dataset.data_dir must be a directory written by "
      f"`python -m sslax.data.shards --from image_folder|jsonl|webdataset --input ... "
      f"--output {data_dir}`."
    )
  try:
    meta = json.loads(path.read_text())
  except ValueError as e:
    raise CorruptDatasetError(f"shards: {path} is not JSON: {e}") from None
  if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
    raise CorruptDatasetError(
      f"shards: {path} has format {meta.get('format')!r} version {meta.get('format_version')!r}"
      f"; this sslax reads {FORMAT!r} version {FORMAT_VERSION}."
    )
  return meta


@dataclasses.dataclass(eq=False)
class ShardSource(RecordSource):
  """Random access by global example index over the ArrayRecord shards of one split.

  `labels` int32 [N] are held in memory (low-shot subsets and label statistics need them);
  images are read and decoded in the tf.data pipeline by `read_tf` (sslax/data/sources/records.py:
  corrupt records replaced by the next readable index, captions tokenized).
  """

  data_dir: str
  split: str
  shard_paths: tuple[str, ...]
  shard_counts: np.ndarray  # int64 [S]
  labels: np.ndarray  # int32 [N]
  num_classes: int
  class_names: tuple[str, ...]
  name: str = "shards"
  channels: int = 3
  captions: bool = False  # the split's records carry captions: batches get "tokens"
  index_map: np.ndarray | None = None  # int64 [N]: a subset's global indices (None: all)
  keys_path: str | None = None  # <split>-keys.txt (None: shards written without it)

  def __post_init__(self):
    self.shard_starts = np.concatenate([[0], np.cumsum(self.shard_counts)]).astype(np.int64)
    self._readers: dict[int, object] = {}
    self._lock = threading.Lock()
    self._init_counters()

  def __len__(self) -> int:
    return len(self.labels)

  def describe(self) -> str:
    return f"shards {self.data_dir}/{self.split}"

  @property
  def total_records(self) -> int:
    return int(self.shard_starts[-1])

  def locate(self, index: int) -> tuple[int, int]:
    """Global record index -> (shard, offset in the shard)."""
    if not 0 <= index < self.total_records:
      raise IndexError(f"record {index} not in [0, {self.total_records})")
    shard = int(np.searchsorted(self.shard_starts, index, side="right")) - 1
    return shard, int(index - self.shard_starts[shard])

  def _reader(self, shard: int):
    """The open reader of `shard`; at most MAX_OPEN_READERS stay open (least recently used
    closed first), so memory does not grow with the number of shards a long run touches."""
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

    with self._lock:
      reader = self._readers.pop(shard, None)
      if reader is None:
        reader = array_record_module.ArrayRecordReader(self.shard_paths[shard], _READER_OPTIONS)
        while len(self._readers) >= MAX_OPEN_READERS:  # dicts keep insertion order: LRU first
          self._readers.pop(next(iter(self._readers)))
      self._readers[shard] = reader  # most recently used last
    return reader

  def read_record(self, index: int) -> bytes:
    """The raw record of example `index` of this source (after any subset)."""
    i = int(index if self.index_map is None else self.index_map[index])
    shard, offset = self.locate(i)
    return self._reader(shard).read([offset])[0]

  def read_example(self, index: int) -> dict:
    """Example `index` as stored: {"image": encoded bytes, "label", "caption", "key"}."""
    return decode_example(self.read_record(index))

  def read_raw(self, index: int) -> tuple[bytes, int, str]:
    ex = self.read_example(index)
    return ex["image"], ex["label"], ex["caption"]

  def example_names(self) -> np.ndarray:
    """Every example's key ([N] str, after any subset), from <split>-keys.txt: no record read."""
    from etils import epath  # pylint: disable=g-import-not-at-top

    if self.keys_path is None:
      raise ValueError(
        f"{self.describe()}: these shards have no {keys_file_name(self.split)} (written before "
        "sslax recorded example names). Rerun the conversion with the same arguments and "
        "--output: completed shards are kept, and the names file is added."
      )
    keys = epath.Path(self.keys_path).read_text(encoding="utf-8").split("\n")[: self.total_records]
    if len(keys) != self.total_records:
      raise CorruptDatasetError(
        f"{self.keys_path}: {len(keys)} names but the shards hold {self.total_records} records."
      )
    keys = np.asarray(keys)
    return keys if self.index_map is None else keys[self.index_map]

  def subset(self, indices) -> ShardSource:
    """The examples `indices` of this source, in that order."""
    indices = np.asarray(indices, np.int64)
    base = indices if self.index_map is None else self.index_map[indices]
    return dataclasses.replace(self, labels=self.labels[indices], index_map=base)


def shard_source(
  data_dir: str | None, split: str, *, num_examples: int | None, seed: int = 0
) -> ShardSource:
  """Split `split` of the shard dataset in `data_dir`; num_examples: a seeded random subset (kept
  in stored order; shards of an image folder are sorted by class, so "the first n" would be one
  class)."""
  from etils import epath  # pylint: disable=g-import-not-at-top

  if not data_dir:
    raise DatasetNotFoundError(
      "shards needs dataset.data_dir: a directory written by `python -m sslax.data.shards`."
    )
  meta = read_metadata(data_dir)
  splits = meta.get("splits", {})
  if split not in splits:
    raise ValueError(
      f"unknown split {split!r} for shards at {data_dir}; valid splits: "
      f"{', '.join(repr(s) for s in splits) or '(none)'}."
    )
  info = splits[split]
  root = epath.Path(data_dir)
  paths = tuple(str(root / s["file"]) for s in info["shards"])
  counts = np.asarray([int(s["num_examples"]) for s in info["shards"]], np.int64)
  labels_path = root / info["labels_file"]
  if "://" not in str(data_dir):  # local: memory-mapped, pages read only when touched
    labels = np.load(str(labels_path), mmap_mode="r", allow_pickle=False)
  else:
    with labels_path.open("rb") as f:
      labels = np.load(f, allow_pickle=False)
  labels = labels.astype(np.int32, copy=False)
  if len(labels) != counts.sum():
    raise CorruptDatasetError(
      f"shards {data_dir}/{split}: {len(labels)} labels but the shards hold {counts.sum()}."
    )
  class_names = tuple(meta.get("class_names") or ())
  source = ShardSource(
    data_dir=str(data_dir),
    split=split,
    shard_paths=paths,
    shard_counts=counts,
    labels=labels,
    num_classes=max(len(class_names), int(labels.max(initial=-1)) + 1),
    class_names=class_names,
    captions="caption" in info.get("features", ()),
    keys_path=str(root / info["keys_file"]) if info.get("keys_file") else None,
  )
  if num_examples is not None and num_examples < len(source):
    keep = np.random.default_rng(seed).permutation(len(source))[:num_examples]
    source = source.subset(np.sort(keep))
  return source


def load(
  key: str,
  split: str,
  *,
  data_dir: str | None,
  image_size: int,
  num_examples: int | None,
  seed: int,
  verify_images: bool,
) -> Source:
  """The registry's loader of "shards" (splits from the dataset's metadata.json)."""
  del key, image_size, verify_images
  return shard_source(data_dir, split, num_examples=num_examples, seed=seed)


registry.register(("shards",), load)
