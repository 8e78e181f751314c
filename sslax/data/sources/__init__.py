"""Dataset sources: the raw examples of one split, read from the data's original files.

A source is one of four kinds: `ArraySource` (decoded uint8 images in memory), `FileSource`
(encoded image files, decoded in the tf.data pipeline), `TFDSSource` (a prepared TFDS dataset in
TFRecord format, read as a stream) (all three in `base.py`), and a `RecordSource` (`records.py`:
encoded records read one by one by global index: record shards, `ShardSource` in `shards.py`,
and TFDS datasets prepared in ArrayRecord format, `TFDSRecordSource` in `tfds.py`).

`get_source(name, split, ...)` looks the dataset name up in the registry (`registry.py`), where
each format module registers its names:

  idx.py             fashion_mnist, mnist (the original idx files)
  cifar.py           cifar10, cifar100 (the original python pickles, read with
                     `safe_pickle.safe_unpickle`, which cannot run code)
  folders.py         image_folder (data_dir/<split>/<class>/*.{png,jpg,jpeg})
  fake.py            fake (deterministic random images)
  colour_folders.py  openclipart, tuxpaint_stamps (labelled colour images)
  image_text.py      IMAGE_TEXT_DATASETS ((image, caption) pairs for CLIP / SigLIP)
  shards.py          shards (record shards written by `python -m sslax.data.shards`)
  tfds.py            any other name: a prepared TFDS dataset

Nothing here downloads anything: when the data is not on the machine a `DatasetNotFoundError`
says every place that was searched and how to get the files.

The settings in `_SETTINGS` (the data-dir search path, the TFDS in-memory limit, ...) live in
the module that reads them; reading or assigning `sources.NAME` reads or assigns it there, so
`monkeypatch.setattr(sources, "SYSTEM_DATA_DIRS", ...)` takes effect everywhere.
"""

from __future__ import annotations

import sys
import types

# Importing a format module registers its dataset names; DATASETS (and the TFDS not-found
# message) keep this order, which tests/data/test_sources_package.py checks: do not sort.
from sslax.data.sources import base, registry, tfds
from sslax.data.sources import idx, cifar, folders, fake, colour_folders, image_text
from sslax.data.sources import shards
from sslax.data.sources import safe_pickle
from sslax.data.sources import subsets
from sslax.data.sources.base import (
  ArraySource,
  CorruptDatasetError,
  DatasetNotFoundError,
  FileSource,
  Source,
  TFDSSource,
)
from sslax.data.sources.cifar import CIFAR10_CLASSES
from sslax.data.sources.colour_folders import COLOUR_FOLDER_DATASETS
from sslax.data.sources.folders import IMAGE_EXTENSIONS, check_image_file
from sslax.data.sources.idx import (
  FASHION_MNIST_CLASSES,
  IDX_IMAGES_MAGIC,
  IDX_LABELS_MAGIC,
  MNIST_CLASSES,
  read_idx_images,
  read_idx_labels,
)
from sslax.data.sources.image_text import IMAGE_TEXT_DATASETS, ImageTextSource
from sslax.data.sources.registry import get_source
from sslax.data.sources.safe_pickle import UnsafePickleError, safe_unpickle

__all__ = [
  "ArraySource",
  "CIFAR10_CLASSES",
  "COLOUR_FOLDER_DATASETS",
  "CorruptDatasetError",
  "DATASETS",
  "DatasetNotFoundError",
  "FASHION_MNIST_CLASSES",
  "FileSource",
  "IDX_IMAGES_MAGIC",
  "IDX_LABELS_MAGIC",
  "IMAGE_EXTENSIONS",
  "IMAGE_TEXT_DATASETS",
  "ImageTextSource",
  "MNIST_CLASSES",
  "Source",
  "TFDSSource",
  "UnsafePickleError",
  "check_image_file",
  "get_source",
  "image_channels",
  "load_source",
  "read_idx_images",
  "read_idx_labels",
  "safe_unpickle",
  # Modules.
  "base",
  "cifar",
  "colour_folders",
  "fake",
  "folders",
  "idx",
  "image_text",
  "registry",
  "safe_pickle",
  "subsets",
  "tfds",
]

DATASETS: tuple[str, ...] = registry.dataset_names()

# The errors are the package's API: report them as sslax.data.sources.X (as before the split
# into modules) in tracebacks; pickle finds them here too.
for _error in (DatasetNotFoundError, CorruptDatasetError, UnsafePickleError):
  _error.__module__ = __name__
del _error


def load_source(config, split: str, num_examples: int = 0) -> Source:
  """`get_source` for config.dataset (an ml_collections ConfigDict); num_examples 0: all.

  The training split (`split == dataset.train_split`) is restricted to the subset that
  `dataset.subset_fraction` or `dataset.subset_file` names (`subsets.py`), wherever the run reads
  it (training, and the train side of its evaluations), drawn from the split as loaded (after
  num_examples) and chosen from labels and names alone. An image folder's files are then checked
  only for the subset (`verify_images`), not for the whole split."""
  ds = config.dataset
  subset = subsets.requested(ds, split)
  folder = registry.dataset_key(ds.name) == "image_folder"
  source = get_source(
    ds.name,
    split,
    data_dir=ds.data_dir or None,
    image_size=ds.image_size,
    num_examples=num_examples or None,
    seed=config.seed,
    verify_images=ds.verify_images and not (subset is not None and folder),
  )
  if subset:
    source, info = subsets.training_subset(source, **subset)
    if ds.verify_images and folder:
      source = folders.verify_files(source)
    print(subsets.describe(info), flush=True)
  return source


def image_channels(source) -> int:
  """Channels of the images a source yields: 1 (grey) or 3 (RGB)."""
  if isinstance(source, ArraySource):
    return int(source.images.shape[-1])
  return int(getattr(source, "channels", 3))


# name -> the module that reads it (see the module docstring).
_SETTINGS: dict[str, types.ModuleType] = {
  "DATA_DIR_ENV": base,
  "USER_CACHE_DIR": base,
  "SYSTEM_DATA_DIRS": base,
  "TFDS_IN_MEMORY_MAX_BYTES": tfds,
  "FAKE_DEFAULT_NUM_EXAMPLES": fake,
  "FAKE_NUM_CLASSES": fake,
  "COLOUR_FOLDER_TEST_PERCENT": colour_folders,
  "COLOUR_FOLDER_MIN_STORED_SIZE": colour_folders,
}
__all__ += list(_SETTINGS)


def _forwarded(name: str, home: types.ModuleType) -> property:
  return property(
    lambda self: getattr(home, name),
    lambda self, value: setattr(home, name, value),
    doc=f"{home.__name__}.{name}",
  )


class _SourcesPackage(types.ModuleType):
  """This package's module type: each name in `_SETTINGS` is a property that reads and assigns
  it in its module (a data descriptor, so `monkeypatch.setattr` restores it there too)."""


for _name, _home in _SETTINGS.items():
  setattr(_SourcesPackage, _name, _forwarded(_name, _home))
del _name, _home
sys.modules[__name__].__class__ = _SourcesPackage
