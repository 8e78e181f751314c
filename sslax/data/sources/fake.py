"""fake: deterministic uniform-random images and labels, for tests and quick runs (no files)."""

from __future__ import annotations

import zlib

import numpy as np

from sslax.data.sources import registry
from sslax.data.sources.base import ArraySource, Source

FAKE_DEFAULT_NUM_EXAMPLES = 256
FAKE_NUM_CLASSES = 10


def fake_source(split: str, *, image_size: int, num_examples: int, seed: int) -> ArraySource:
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
  """The registry's loader of "fake": FAKE_DEFAULT_NUM_EXAMPLES examples unless told."""
  del key, data_dir, verify_images
  return fake_source(
    split,
    image_size=image_size,
    num_examples=num_examples or FAKE_DEFAULT_NUM_EXAMPLES,
    seed=seed,
  )


registry.register(("fake",), load)
