"""The pictures protocol: PNGs of the augmented views, a PCA map of the test features coloured
by label, and a nearest-neighbour retrieval grid, in DIR/pictures/."""

from __future__ import annotations

import os

import jax
import numpy as np

from sslax import workdir as workdir_lib
from sslax.data import augment, pipeline
from sslax.data.sources import ArraySource, FileSource
from sslax.evaluation import pictures as pictures_lib
from sslax.evaluation import retrieval as retrieval_lib
from sslax.evaluation.protocols.frozen import train_test_features
from sslax.evaluation.protocols.registry import register


@register(
  "pictures",
  summary="PNGs in DIR/pictures/: augmented views, PCA map of test features, retrieval grid",
)
def pictures(encoders, ctx, num_images: int = 8, num_queries: int = 6, k: int = 8) -> dict:
  """augmentations.png (the method's views, once), and per encoder embedding_pca.png and
  retrieval.png: in DIR/pictures/ for the trained encoder, DIR/pictures/<name>/ for others."""
  if ctx.workdir is None:
    raise ValueError("the pictures protocol writes PNGs: it needs a workdir.")
  config = ctx.config
  root = workdir_lib.output_dir(ctx.workdir, "pictures")
  out = {}
  for i, enc in enumerate(encoders):
    train_src, test_src, train, test = train_test_features(enc, ctx)
    # Explicit gather (every process, a collective): the PCA map and the neighbour search want
    # the whole arrays on the host; pictures are for small data.
    (x_train, y_train), (x_test, y_test) = train.gather(), test.gather()
    out_dir = root if enc.name == "pretrained" else os.path.join(root, enc.name)
    files = {}
    if jax.process_index() == 0:
      if i == 0 and ctx.views:
        idx = np.arange(min(num_images, pipeline.num_examples(train_src)))
        files["augmentations"] = os.path.join(root, "augmentations.png")
        pictures_lib.augmentation_grid(
          images_at(train_src, idx), ctx.views, files["augmentations"], seed=config.seed
        )
      files["embedding"] = os.path.join(out_dir, "embedding_pca.png")
      pictures_lib.embedding_map(
        x_test,
        y_test,
        files["embedding"],
        num_classes=int(test_src.num_classes),
        class_names=tuple(getattr(test_src, "class_names", ())),
      )
      queries = np.random.default_rng(config.seed).choice(
        len(y_test), size=min(num_queries, len(y_test)), replace=False
      )
      neighbours = retrieval_lib.nearest_neighbours(x_test[queries], x_train, k)
      size, fraction = enc.image_size, enc.preprocessing["crop_fraction"]
      centre = lambda src, ids, size=size, fraction=fraction: [  # as the encoder saw, unnormalised
        augment.center_view(im, size, fraction).numpy() for im in images_at(src, ids)
      ]
      gallery_ids = np.unique(neighbours)
      lookup = dict(zip(gallery_ids, centre(train_src, gallery_ids)))
      files["retrieval"] = os.path.join(out_dir, "retrieval.png")
      pictures_lib.retrieval_grid(
        centre(test_src, queries),
        y_test[queries],
        [[lookup[j] for j in row] for row in neighbours],
        y_train[neighbours],
        files["retrieval"],
      )
    out[enc.name] = {"files": files}
  return out


def images_at(source, indices) -> list[np.ndarray]:
  """The raw uint8 [H, W, C] images `indices` of a source (TFDS: example ids of the eval pass,
  `pipeline.eval_batches`: process p's part of the split follows the earlier parts)."""
  indices = [int(i) for i in indices]
  if isinstance(source, ArraySource):
    return [source.images[i] for i in indices]
  if isinstance(source, FileSource):
    return [source.decode(source.paths[i]).numpy() for i in indices]
  found, offset, count = {}, 0, jax.process_count()
  for part in range(count):
    size = source.process_num_examples(part, count) if count > 1 else source.num_examples
    wanted = {i - offset for i in indices if offset <= i < offset + size}
    if wanted:
      ds = source.as_dataset(process_index=part, process_count=count, shuffle_seed=0)
      for i, example in enumerate(ds.as_numpy_iterator()):
        if i in wanted:
          found[offset + i] = example["image"]
          if len(found) == len(set(indices)):
            break
    offset += size
  return [found[i] for i in indices]
