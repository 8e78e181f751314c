"""Training subsets: part of a split, chosen from its metadata alone (no image is read).

A run trains on part of `dataset.train_split` when its config says which part
(`dataset.subset_fraction` or `dataset.subset_file`, applied by `sources.load_source`):

* a fraction: a class-balanced `fraction` of the labels drawn from `dataset.subset_seed`
  (`class_balanced_subset`), the low-shot subsets of SimCLR / BYOL-style semi-supervised
  evaluation. It needs every label up front (`labels_of`).
* a list file: one example name per line, as SimCLR v2's `imagenet_subsets/1percent.txt` and
  `10percent.txt` (`n01440764_10026.JPEG`: the file name of an ImageNet training image), matched
  against the split's per-example names (`example_names`: an image folder's file paths, record
  shards' keys). An entry with a `/` must match that many trailing path components
  (`n01440764/n01440764_10026.JPEG`). Or a JSON file {"ids": [...]} of example indices, as the
  `lowshot` protocol writes to DIR/lowshot/, to train on exactly the subset it chose.

Where the labels and names come from, per source:
  in memory (idx, CIFAR, small TFDS, fake)  labels in memory; no names
  image_folder                              labels and names from the file list
  record shards (`dataset.name=shards`)     labels from <split>-labels.npy, names from
                                            <split>-keys.txt (written by `python -m
                                            sslax.data.shards` since 2026-11-30)
  TFDS (ArrayRecord or TFRecord)            labels and names only inside each record: refused
                                            with the fix (TFDS's own subsets, or shards)
"""

from __future__ import annotations

import hashlib
import json
import os

from absl import logging
import numpy as np

from sslax.data.sources.base import ArraySource, FileSource, TFDSSource, take_indices
from sslax.data.sources.tfds import TFDSRecordSource

_MAX_LISTED = 5  # names quoted in an error


class SubsetError(ValueError):
  """A subset that cannot be chosen: a bad list file, or a source without cheap metadata."""


def class_balanced_subset(labels, fraction: float, *, num_classes: int, seed: int) -> np.ndarray:
  """Indices of a class-balanced `fraction` of the examples, reproducible from `seed`.

  Class c with n_c examples gets floor(fraction * n_c) or ceil(fraction * n_c) of them: the
  floors, then one more for the classes with the largest remainders until the total reaches
  round(fraction * N) (ties broken by the seed), and at least 1 for every class that has any.
  Within a class the examples are drawn uniformly without replacement.

  Args:
    labels: [N] int labels in [0, num_classes).
    fraction: in (0, 1].
  Returns:
    sorted int64 [K] indices into `labels`.
  """
  labels = np.asarray(labels)
  if not 0 < fraction <= 1:
    raise ValueError(f"fraction must be in (0, 1], got {fraction!r} (e.g. 0.01 for 1% of labels)")
  counts = np.bincount(labels, minlength=num_classes)
  rng = np.random.default_rng(seed)
  exact = fraction * counts
  take = np.floor(exact).astype(np.int64)
  extra = int(round(fraction * labels.size)) - int(take.sum())
  if extra > 0:
    remainder = exact - take
    # Largest remainder first; the random key only orders classes with equal remainders.
    order = np.lexsort((rng.permutation(num_classes), -remainder))
    for c in order[:extra]:
      if remainder[c] > 0:
        take[c] += 1
  take = np.where((counts > 0) & (take == 0), 1, take)
  # Each class's indices in increasing order (a stable sort by label: one pass, not one scan
  # of the labels per class, which at 1000 classes x 1.28M labels is what dominated).
  by_class = np.split(np.argsort(labels, kind="stable"), np.cumsum(counts)[:-1])
  chosen = [
    rng.choice(by_class[c], size=int(take[c]), replace=False) for c in range(num_classes) if take[c]
  ]
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def labels_of(source) -> np.ndarray:
  """Every label of a random-access source, int [N], without reading an image.

  Raises SubsetError for TFDS sources (their labels are only inside each record), naming the
  ways around it."""
  if isinstance(source, (TFDSSource, TFDSRecordSource)):
    kind = "streamed" if isinstance(source, TFDSSource) else "read by random access"
    raise SubsetError(
      f"A label subset needs every label of the split up front, but TFDS {source.name!r} "
      f"({kind}) stores each label inside its record: learning them is a pass over every image. "
      "Use TFDS's own prepared subset as the dataset (SimCLR's 1% / 10% ImageNet subsets: "
      "dataset.name=imagenet2012_subset/1pct or /10pct, `tfds build` them), or convert the split "
      "once to record shards, whose index holds the labels and file names: `python -m "
      f"sslax.data.shards --from tfds --input {source.name} --split SPLIT --output DIR`, then "
      "dataset.name=shards, dataset.data_dir=DIR."
    )
  labels = getattr(source, "labels", None)
  if labels is None:
    raise SubsetError(f"{type(source).__name__} {getattr(source, 'name', '')!r} has no labels.")
  return np.asarray(labels)


def example_names(source) -> np.ndarray:
  """The name of every example of a random-access source ([N] str: an image folder's file
  paths, record shards' keys), read from metadata only. SubsetError when it has none."""
  if isinstance(source, FileSource):
    return np.asarray(source.paths).astype(str)
  if hasattr(source, "example_names"):  # record shards (shards.ShardSource)
    return source.example_names()
  what = "in memory" if isinstance(source, ArraySource) else type(source).__name__
  hint = (
    " Its records hold the file names, but reading them is a pass over every image: convert the "
    "split once to record shards (`python -m sslax.data.shards --from tfds ...`), whose index "
    "holds them."
    if isinstance(source, (TFDSSource, TFDSRecordSource))
    else ""
  )
  raise SubsetError(
    f"A list of example names needs a dataset whose examples have names (an image_folder, or "
    f"record shards); {getattr(source, 'name', '')!r} ({what}) has none.{hint} Use "
    "dataset.subset_fraction (a class-balanced seeded fraction), or a JSON file "
    '{"ids": [...]} of example indices as dataset.subset_file.'
  )


def read_subset_file(path: str) -> tuple[str, list, dict | None]:
  """-> ("ids", [int], the JSON dict) for a JSON file {"ids": [...], ...} (DIR/lowshot/*.json),
  else ("names", [str], None): one name per line, blank lines and lines starting with # skipped."""
  from etils import epath  # pylint: disable=g-import-not-at-top  (gs:// paths; slow import)

  p = epath.Path(os.path.expanduser(path))
  if not p.exists():
    raise SubsetError(
      f"dataset.subset_file={path!r} does not exist: give a list of example names, one per line "
      "(SimCLR v2's imagenet_subsets/1percent.txt), or a JSON {\"ids\": [...]} file."
    )
  text = p.read_text()
  if str(path).endswith(".json"):
    try:
      data = json.loads(text)
      ids = data["ids"]
      if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise TypeError("ids must be integers")
    except (ValueError, KeyError, TypeError) as e:
      raise SubsetError(
        f"{path}: not a subset file of example ids (want JSON {{\"ids\": [int, ...]}}, as the "
        f"lowshot protocol writes to DIR/lowshot/): {type(e).__name__}: {e}"
      ) from None
    return "ids", list(ids), data
  names = [line.strip() for line in text.splitlines()]
  names = [n.replace("\\", "/") for n in names if n and not n.startswith("#")]
  if not names:
    raise SubsetError(f"dataset.subset_file={path!r} lists no example names.")
  return "names", names, None


def file_sha256(path: str) -> str:
  """sha256 (hex) of a subset file's bytes: what a cache of the subset's features is keyed on,
  so an edited list (same path, same size or not) is not served the old list's features."""
  from etils import epath  # pylint: disable=g-import-not-at-top  (gs:// paths; slow import)

  p = epath.Path(os.path.expanduser(path))
  if not p.exists():
    read_subset_file(path)  # raises the missing-file error, with its fix
  return hashlib.sha256(p.read_bytes()).hexdigest()


def match_names(
  names, wanted, *, what: str = "the split", list_name: str = "the list"
) -> np.ndarray:
  """Indices (sorted) of the examples whose names match `wanted`, one example per entry.

  An entry with k path components matches an example whose last k path components equal it
  ("n01440764_10026.JPEG" matches ".../train/n01440764/n01440764_10026.JPEG"). Every entry must
  match exactly one example: SubsetError (with how many matched and the first misses) if not.
  """
  seen, repeated = set(), []
  for w in wanted:
    if w in seen:
      repeated.append(w)
    seen.add(w)
  if repeated:
    raise SubsetError(
      f"{list_name}: {len(repeated)} entries are listed more than once (first: "
      f"{repeated[:_MAX_LISTED]}); list each example once."
    )
  tables: dict[int, dict[str, int]] = {}
  ids, missing, ambiguous = [], [], []
  for w in wanted:
    k = len(w.split("/"))
    if k not in tables:
      table: dict[str, int] = {}
      for i, name in enumerate(names):
        tail = "/".join(str(name).replace("\\", "/").split("/")[-k:])
        table[tail] = -1 if tail in table else i  # -1: several examples share this name
      tables[k] = table
    i = tables[k].get(w)
    if i is None:
      missing.append(w)
    elif i < 0:
      ambiguous.append(w)
    else:
      ids.append(i)
  if missing or ambiguous:
    parts = []
    if missing:
      parts.append(
        f"{len(missing)} match no example of {what} (first: {missing[:_MAX_LISTED]}; names "
        f"there look like {[str(n) for n in names[:2]]})"
      )
    if ambiguous:
      parts.append(
        f"{len(ambiguous)} match several examples (first: {ambiguous[:_MAX_LISTED]}): write "
        "them with their parent directory, e.g. class/file.JPEG"
      )
    raise SubsetError(
      f"{list_name}: {len(ids)} of {len(wanted)} entries matched; " + "; ".join(parts) + ". Is "
      "dataset.train_split the split the list was made for (SimCLR's lists: ImageNet's train "
      "split), with dataset.num_train_examples=0?"
    )
  return np.sort(np.asarray(ids, np.int64))


def choose(
  source, *, fraction: float = 0.0, seed: int = 0, file: str = ""
) -> tuple[np.ndarray, dict]:
  """The subset's indices into `source` (sorted int64 [K]) and a record of how they were chosen:
  {"fraction" | "file", "seed", "num_split_examples", "num_examples", "per_class" (when the
  labels are cheap), "ids"}. Exactly one of `fraction` (in (0, 1]) and `file` is given."""
  if bool(fraction) == bool(file):
    raise SubsetError(
      f"Choose a subset by exactly one of dataset.subset_fraction (got {fraction!r}) and "
      f"dataset.subset_file (got {file!r}), not both."
    )
  n = source.num_examples if isinstance(source, TFDSSource) else len(source)
  info: dict = {"num_split_examples": int(n)}
  if fraction:
    if not 0 < fraction <= 1:
      raise SubsetError(
        f"dataset.subset_fraction={fraction!r} must be in (0, 1] (0.01: 1% of the labels)."
      )
    ids = class_balanced_subset(
      labels_of(source), fraction, num_classes=int(source.num_classes), seed=int(seed)
    )
    info.update(fraction=float(fraction), seed=int(seed))
  else:
    kind, entries, data = read_subset_file(file)
    info["file"] = str(file)
    if kind == "ids":
      if data.get("num_train_examples", n) != n:
        raise SubsetError(
          f"{file} was chosen from a split of {data['num_train_examples']} examples; this "
          f"run's {getattr(source, 'name', '')!r} split has {n} (another dataset, split or "
          "dataset.num_train_examples?)."
        )
      ids = np.asarray(entries, np.int64)
      if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise SubsetError(f"{file}: ids must lie in [0, {n}), got [{ids.min()}, {ids.max()}].")
      if np.unique(ids).size != ids.size:
        raise SubsetError(f"{file}: some ids are listed more than once.")
      ids = np.sort(ids)
    else:
      ids = match_names(
        example_names(source),
        entries,
        what=f"{getattr(source, 'name', 'the split')!r} ({n} examples)",
        list_name=str(file),
      )
  if ids.size == 0:
    raise SubsetError("The subset is empty.")
  info["num_examples"] = int(ids.size)
  try:
    labels = labels_of(source)
  except SubsetError:
    labels = None
  if labels is not None:
    info["per_class"] = np.bincount(labels[ids], minlength=int(source.num_classes)).tolist()
  info["ids"] = ids.tolist()
  return ids, info


def describe(info: dict) -> str:
  """One line: what the subset is and how many examples it kept."""
  how = (
    f"a class-balanced {100 * info['fraction']:g}% (seed {info['seed']})"
    if "fraction" in info
    else f"{info['file']} (every entry matched)"
  )
  line = f"training subset: {info['num_examples']} of {info['num_split_examples']} examples, {how}"
  if info.get("per_class"):
    present = [c for c in info["per_class"] if c]
    line += f"; {len(present)} classes, {min(present)}-{max(present)} examples each"
  return line


def training_subset(source, *, fraction: float = 0.0, seed: int = 0, file: str = ""):
  """-> (the subset of `source` as a random-access source, `choose`'s record)."""
  ids, info = choose(source, fraction=fraction, seed=seed, file=file)
  logging.info("%s: %s", getattr(source, "name", ""), describe(info))
  return take_indices(source, ids), info


def requested(dataset, split: str) -> dict | None:
  """The subset config.dataset (`dataset`) restricts `split` to, as `training_subset`'s
  keywords: {"fraction", "seed"} or {"file"}, or None (not the training split, or no subset
  asked for). The one reading of the `subset_*` keys: loading, the feature cache's identity
  and evaluation records use it."""
  if split != dataset.get("train_split"):
    return None
  fraction = float(dataset.get("subset_fraction", 0.0) or 0.0)
  file = str(dataset.get("subset_file", "") or "")
  subset = {"fraction": fraction, "seed": int(dataset.get("subset_seed", 0))} if fraction else {}
  if file:  # both given: `choose` refuses it with the fix
    subset["file"] = file
  return subset or None
