"""Image-text sources (sslax.data.sources.image_text): pairs files, held-out splits, the Open
Clip Art / Tux Paint layouts, templated captions, and the caption tokens in pipeline batches.
Fixtures are written here (tmp_path)."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from testkit.image_text import write_pairs
from sslax.data import pipeline, sources
from sslax.data.sources import image_text


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_pairs_file_source_splits_and_alpha(tmp_path, fmt):
  path, rows = write_pairs(str(tmp_path), fmt=fmt)
  get = lambda split: sources.get_source("image_text_pairs", split, data_dir=path, image_size=8)
  full = get("all")
  assert full.images.shape == (24, 8, 8, 3) and full.images.dtype == np.uint8
  assert list(full.captions) == [r["caption"] for r in rows]
  np.testing.assert_array_equal(full.labels, [r["label"] for r in rows])
  np.testing.assert_array_equal(
    full.tokens, image_text.source_tokenizer().encode_batch(full.captions)
  )
  # Transparent pixels are composited on white; the opaque colour survives.
  assert np.all(full.images[0, :, -1] == 255)
  assert tuple(full.images[0, 4, 1]) == (0, 100, 200)
  # Held-out split: fixed by the file-name hash, disjoint, together everything.
  train, test = get("train"), get("test")
  held = [r["caption"] for r in rows if image_text.is_held_out(r["image"])]
  assert list(test.captions) == held and len(train.captions) + len(held) == 24


def test_held_out_is_deterministic_and_about_a_tenth():
  names = [f"file_{i}.png" for i in range(2000)]
  picks = [image_text.is_held_out(n) for n in names]
  assert picks == [image_text.is_held_out(n) for n in names]
  assert 0.07 < np.mean(picks) < 0.13


def test_bad_pairs_files_name_the_problem(tmp_path):
  path, _ = write_pairs(str(tmp_path), n=3)
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"image": "img_0.png", "caption": "ok"}\n{"image": "img_1.png"}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2: needs the keys 'image' and 'caption'"):
    sources.get_source("image_text_pairs", "all", data_dir=str(bad))
  bad.write_text("not json\n")
  with pytest.raises(ValueError, match=r"bad.jsonl:1: not a JSON object"):
    sources.get_source("image_text_pairs", "all", data_dir=str(bad))
  bad.write_text('{"image": "missing.png", "caption": "x"}\n')
  with pytest.raises(sources.DatasetNotFoundError, match="missing.png does not exist"):
    sources.get_source("image_text_pairs", "all", data_dir=str(bad))
  with pytest.raises(sources.DatasetNotFoundError, match="needs --config.dataset.data_dir"):
    sources.get_source("image_text_pairs", "all")
  with pytest.raises(ValueError, match="unknown split 'validation'"):
    sources.get_source("image_text_pairs", "validation", data_dir=path)


def test_openclipart_and_tuxpaint_layouts(tmp_path, monkeypatch):
  monkeypatch.setattr(image_text, "DECODED_CACHE_DIR", str(tmp_path / "cache"))
  png = np.zeros((6, 6, 4), np.uint8)
  oca = tmp_path / "openclipart"
  for cat, name, title, desc in [
    ("animals", "frog_01", "2 dead frogs", "nothing &amp; more"),
    ("food", "bowl_02", "bowl", ""),
    ("food", "pie_03", None, None),
  ]:
    (oca / "png" / cat).mkdir(parents=True, exist_ok=True)
    (oca / "svg" / cat).mkdir(parents=True, exist_ok=True)
    Image.fromarray(png, "RGBA").save(oca / "png" / cat / f"{name}.png")
    if title is not None:
      (oca / "svg" / cat / f"{name}.svg").write_text(
        f"<svg><metadata><dc:title>{title}</dc:title><dc:description>{desc}</dc:description>"
        "<dc:creator><dc:title>Someone</dc:title></dc:creator></metadata></svg>"
      )
  src = sources.get_source("openclipart_captions", "all", data_dir=str(tmp_path), image_size=4)
  assert list(src.captions) == ["2 dead frogs. nothing & more", "bowl", "pie"]
  np.testing.assert_array_equal(src.labels, [0, 1, 1])
  assert src.class_names == ("animals", "food") and np.all(src.images == 255)

  stamps = tmp_path / "tuxpaint-stamps" / "stamps" / "symbols" / "math"
  stamps.mkdir(parents=True)
  Image.fromarray(png, "RGBA").save(stamps / "plus.png")
  (stamps / "plus.txt").write_text("A plus sign.\nfr.utf8=Un signe plus.\n")
  Image.fromarray(png, "RGBA").save(stamps / "minus_sign.png")
  src = sources.get_source("tuxpaint_captions", "all", data_dir=str(tmp_path), image_size=4)
  assert sorted(src.captions) == ["A plus sign.", "minus sign"]


def test_templated_captions_and_prompt_names():
  base = sources.get_source("fake", "train", image_size=4, num_examples=12)
  base = dataclasses.replace(base, name="fashion_mnist")
  src = image_text._templated_source(
    base, image_text.FASHION_MNIST_PROMPT_NAMES, ("a photo of a {label}.", "a {label}."), name="x"
  )
  names = image_text.FASHION_MNIST_PROMPT_NAMES
  assert src.captions[0] == f"a photo of a {names[base.labels[0]]}."
  assert src.captions[1] == f"a {names[base.labels[1]]}."
  assert image_text.prompt_class_names(base) == names
  assert image_text.prompt_class_names(
    dataclasses.replace(base, name="openclipart", class_names=("signs_and_symbols",))
  ) == ("signs and symbols",)


def test_tfds_image_text_not_prepared_says_how(tmp_path):
  with pytest.raises(sources.DatasetNotFoundError, match="tfds build coco_captions"):
    sources.get_source("coco_captions", "train", data_dir=str(tmp_path))


def test_pipeline_batches_carry_the_caption_of_each_image(tmp_path):
  path, _ = write_pairs(str(tmp_path))
  src = sources.get_source("image_text_pairs", "all", data_dir=path, image_size=8)
  from sslax.data.augment import ViewSpec

  ds = pipeline.train_dataset(src, (ViewSpec(size=8),), global_batch=8, seed=3)
  for batch in ds.take(4).as_numpy_iterator():
    assert batch["tokens"].dtype == np.int32 and batch["tokens"].shape == (8, 77)
    np.testing.assert_array_equal(batch["tokens"], src.tokens[batch["index"]])
  plain = sources.get_source("fake", "train", image_size=8, num_examples=16)
  assert "tokens" not in next(
    pipeline.train_dataset(plain, (ViewSpec(size=8),), global_batch=8, seed=3).as_numpy_iterator()
  )
