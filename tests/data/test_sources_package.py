"""The layout of sslax.data.sources: modules share only public names, import no cycle, and the
package's registry, re-exports and forwarded settings behave like the old single module."""

from __future__ import annotations

import ast
import glob
import os
import pickle

import ml_collections
import numpy as np
import pytest

from sslax.data import sources

PACKAGE = "sslax.data.sources"
PACKAGE_DIR = os.path.dirname(sources.__file__)
MODULES = sorted(
  os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(PACKAGE_DIR, "*.py"))
)


def _parse(module: str) -> ast.Module:
  with open(os.path.join(PACKAGE_DIR, module + ".py"), encoding="utf-8") as f:
    return ast.parse(f.read())


def _sibling_imports(tree: ast.Module) -> tuple[list[tuple[str, str]], dict[str, str]]:
  """-> ([(sibling module, imported name)], {local name bound to a sibling module: module})."""
  names, module_aliases = [], {}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom):
      if node.level:  # relative: from . import x / from .x import y
        base = f"{PACKAGE}.{node.module}" if node.module else PACKAGE
      else:
        base = node.module or ""
      if base == PACKAGE:
        for a in node.names:
          module_aliases[a.asname or a.name] = a.name
          names.append((a.name, a.name))
      elif base.startswith(PACKAGE + "."):
        sibling = base[len(PACKAGE) + 1 :]
        names += [(sibling, a.name) for a in node.names]
    elif isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith(PACKAGE + ".") and a.asname:
          module_aliases[a.asname] = a.name[len(PACKAGE) + 1 :]
  return names, module_aliases


def test_the_package_has_one_module_per_format():
  assert {
    "base",
    "registry",
    "safe_pickle",
    "idx",
    "cifar",
    "folders",
    "colour_folders",
    "tfds",
    "fake",
    "image_text",
  } <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_no_module_uses_a_private_name_of_a_sibling(module):
  tree = _parse(module)
  names, module_aliases = _sibling_imports(tree)
  private = [f"from {m} import {n}" for m, n in names if n.startswith("_")]
  for node in ast.walk(tree):
    if (
      isinstance(node, ast.Attribute)
      and isinstance(node.value, ast.Name)
      and node.value.id in module_aliases
      and node.attr.startswith("_")
    ):
      private.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
  assert not private, f"{module}.py uses private names of sibling modules: {private}"


def test_the_modules_import_no_cycle():
  graph = {}
  for module in MODULES:
    if module == "__init__":
      continue  # The package imports every module; none imports the package's own names.
    names, _ = _sibling_imports(_parse(module))
    graph[module] = {m for m, _ in names if m in MODULES and m != "__init__"}
  done, path = set(), []

  def visit(m):
    assert m not in path, f"import cycle: {' -> '.join(path[path.index(m) :] + [m])}"
    if m in done:
      return
    path.append(m)
    for n in sorted(graph[m]):
      visit(n)
    path.pop()
    done.add(m)

  for m in sorted(graph):
    visit(m)


def test_datasets_keep_their_order_and_every_name_is_registered():
  assert sources.DATASETS == (
    "fashion_mnist",
    "mnist",
    "cifar10",
    "cifar100",
    "image_folder",
    "fake",
    "openclipart",
    "tuxpaint_stamps",
    "image_text_pairs",
    "openclipart_captions",
    "tuxpaint_captions",
    "fashion_mnist_captions",
    "coco_captions",
    "shards",
  )
  assert sources.registry.dataset_names() == sources.DATASETS
  assert set(sources.COLOUR_FOLDER_DATASETS) <= set(sources.DATASETS)
  assert set(sources.IMAGE_TEXT_DATASETS) <= set(sources.DATASETS)
  assert sources.image_text.IMAGE_TEXT_DATASETS is sources.IMAGE_TEXT_DATASETS


def test_registering_a_name_twice_or_unnormalised_fails():
  with pytest.raises(ValueError, match="already registered"):
    sources.registry.register(("mnist",), sources.fake.load)
  with pytest.raises(ValueError, match="not normalised"):
    sources.registry.register(("Fashion-MNIST",), sources.idx.load)


def test_names_are_normalised_and_num_examples_checked():
  src = sources.get_source(" FAKE ", "train", image_size=4, num_examples=3)
  assert src.name == "fake" and len(src) == 3
  with pytest.raises(ValueError, match="num_examples must be >= 1, got 0"):
    sources.get_source("fake", "train", num_examples=0)


def test_the_public_api_is_re_exported():
  for name in sources.__all__:
    assert hasattr(sources, name), name
  assert sources.ArraySource is sources.base.ArraySource
  assert sources.safe_unpickle is sources.safe_pickle.safe_unpickle
  assert issubclass(sources.UnsafePickleError, sources.CorruptDatasetError)
  assert issubclass(sources.ImageTextSource, sources.ArraySource)
  assert sources.read_idx_images is sources.idx.read_idx_images


def test_errors_are_reported_as_the_packages():
  for error in (
    sources.DatasetNotFoundError,
    sources.CorruptDatasetError,
    sources.UnsafePickleError,
  ):
    assert f"{error.__module__}.{error.__qualname__}" == f"sslax.data.sources.{error.__name__}"
    again = pickle.loads(pickle.dumps(error("where")))
    assert type(again) is error and str(again) == "where"


def test_settings_set_on_the_package_reach_the_module_that_reads_them(monkeypatch, tmp_path):
  monkeypatch.setattr(sources, "SYSTEM_DATA_DIRS", (str(tmp_path / "system"),))
  monkeypatch.setattr(sources, "USER_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
  assert sources.base.SYSTEM_DATA_DIRS == (str(tmp_path / "system"),)
  assert sources.base.search_roots(None) == [str(tmp_path / "cache"), str(tmp_path / "system")]
  monkeypatch.setattr(sources, "FAKE_DEFAULT_NUM_EXAMPLES", 7)
  assert sources.fake.FAKE_DEFAULT_NUM_EXAMPLES == 7
  assert len(sources.get_source("fake", "train", image_size=4)) == 7
  monkeypatch.setattr(sources.tfds, "TFDS_IN_MEMORY_MAX_BYTES", 5)
  assert sources.TFDS_IN_MEMORY_MAX_BYTES == 5  # read back from the module, never a stale copy


def test_monkeypatched_settings_are_restored_in_their_module():
  before = sources.base.USER_CACHE_DIR
  with pytest.MonkeyPatch.context() as m:
    m.setattr(sources, "USER_CACHE_DIR", "/elsewhere")
    assert sources.base.USER_CACHE_DIR == "/elsewhere"
  assert sources.base.USER_CACHE_DIR == sources.USER_CACHE_DIR == before
  assert "USER_CACHE_DIR" not in vars(sources)


def _config(**dataset):
  c = ml_collections.ConfigDict()
  c.seed = 3
  c.dataset = ml_collections.ConfigDict(
    dict(name="fake", data_dir="", image_size=8, verify_images=True, **dataset)
  )
  return c


def test_load_source_and_image_channels():
  src = sources.load_source(_config(), "train", num_examples=5)
  want = sources.get_source("fake", "train", image_size=8, num_examples=5, seed=3)
  np.testing.assert_array_equal(src.images, want.images)
  assert len(sources.load_source(_config(), "train")) == sources.FAKE_DEFAULT_NUM_EXAMPLES
  assert sources.image_channels(src) == 3
  grey = sources.ArraySource(
    np.zeros((2, 4, 4, 1), np.uint8), np.zeros(2, np.int32), 1, ("a",), "g"
  )
  assert sources.image_channels(grey) == 1
  files = sources.FileSource(np.array(["a.png"]), np.zeros(1, np.int32), 1, ("a",), "f", channels=1)
  assert sources.image_channels(files) == 1
