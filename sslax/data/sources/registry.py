"""Dataset name -> loader: each format module registers its names when it is imported.

`get_source` normalises the name, looks it up and calls the loader; a name no module
registered falls through to the fallback loader (TFDS, registered by `tfds.py`). The package
`sslax.data.sources` imports every format module, so every name is registered by the time it
can be used.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from sslax.data.sources.base import Source


class Loader(Protocol):
  """The one signature of every registered loader.

  `key` is the normalised dataset name (for the fallback, the name exactly as given). Each
  loader applies `num_examples` itself (None: every example) and ignores what it does not use.
  """

  def __call__(
    self,
    key: str,
    split: str,
    *,
    data_dir: str | None,
    image_size: int,
    num_examples: int | None,
    seed: int,
    verify_images: bool,
  ) -> Source: ...


_LOADERS: dict[str, Loader] = {}  # In registration order: `dataset_names()` keeps it.
_FALLBACK: list[Loader] = []


def register(names: Sequence[str], loader: Loader) -> None:
  """Makes `get_source(name, ...)` call `loader` for each of `names` (normalised names)."""
  for name in names:
    if name != dataset_key(name):
      raise ValueError(f"dataset name {name!r} is not normalised (want {dataset_key(name)!r})")
    if name in _LOADERS and _LOADERS[name] is not loader:
      raise ValueError(f"dataset name {name!r} is already registered")
    _LOADERS[name] = loader


def register_fallback(loader: Loader) -> None:
  """The loader of every name nobody registered (the TFDS loader)."""
  _FALLBACK[:] = [loader]


def dataset_names() -> tuple[str, ...]:
  """Every registered name, in registration order."""
  return tuple(_LOADERS)


def dataset_key(name: str) -> str:
  """The normalised spelling of a dataset name: "Fashion-MNIST " -> "fashion_mnist"."""
  return name.strip().lower().replace("-", "_")


def get_source(
  name: str,
  split: str,
  *,
  data_dir: str | None = None,
  image_size: int = 32,
  num_examples: int | None = None,
  seed: int = 0,
  verify_images: bool = True,
) -> Source:
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
  key = dataset_key(name)
  loader = _LOADERS.get(key)
  if loader is None:
    if not _FALLBACK:
      raise ValueError(f"unknown dataset {name!r}; registered: {', '.join(_LOADERS)}")
    loader, key = _FALLBACK[0], name  # TFDS names are passed on as given.
  return loader(
    key,
    split,
    data_dir=data_dir,
    image_size=image_size,
    num_examples=num_examples,
    seed=seed,
    verify_images=verify_images,
  )
