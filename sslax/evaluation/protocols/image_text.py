"""Image-text protocols (CLIP, SigLIP encoders with a text tower): zero-shot classification
with prompt ensembles, and image <-> text retrieval Recall@K on held-out pairs."""

from __future__ import annotations

from sslax.data import sources
from sslax.data.sources import image_text as image_text_data
from sslax.evaluation import image_text_retrieval as retrieval_lib
from sslax.evaluation import zero_shot as zero_shot_lib
from sslax.evaluation.protocols.registry import register


@register(
  "zero_shot",
  summary="image-text models (clip, siglip): prompt-ensemble zero-shot accuracy on "
  "dataset.zero_shot_dataset (templates: dataset.zero_shot_templates)",
  baselines=("random_init",),
  image_text=True,
)
def zero_shot(encoders, ctx) -> dict:
  """Classifies dataset.zero_shot_split of dataset.zero_shot_dataset (default: the training
  dataset's labels) by the nearest prompt-ensemble class embedding."""
  for enc in encoders:
    zero_shot_lib.require_text_tower(enc)
  config, ds = ctx.config, ctx.config.dataset
  name = ds.zero_shot_dataset or ds.name
  source = sources.get_source(
    name,
    ds.zero_shot_split,
    data_dir=(ds.data_dir or None) if name == ds.name else None,
    image_size=ds.image_size,
    seed=config.seed,
  )
  class_names = image_text_data.prompt_class_names(source)
  templates = tuple(ds.zero_shot_templates)
  return {
    enc.name: zero_shot_lib.zero_shot(
      enc, source, class_names, templates, batch_size=config.eval.batch_size
    )
    for enc in encoders
  }


@register(
  "image_text_retrieval",
  summary="image-text models: image->text and text->image Recall@1/5/10 on the held-out pairs "
  "of dataset.test_split",
  baselines=("random_init",),
  image_text=True,
)
def image_text_retrieval(encoders, ctx) -> dict:
  for enc in encoders:
    zero_shot_lib.require_text_tower(enc)
  config, ds = ctx.config, ctx.config.dataset
  source = sources.load_source(config, ds.test_split)
  if getattr(source, "tokens", None) is None:
    raise ValueError(
      f"--protocol image_text_retrieval needs captions: config.dataset.name={ds.name!r} is "
      f"not an image-text dataset ({sources.IMAGE_TEXT_DATASETS})."
    )
  out = {}
  for enc in encoders:
    images, _ = zero_shot_lib.image_embeddings(enc, source, batch_size=config.eval.batch_size)
    texts = zero_shot_lib.text_embeddings_of_tokens(enc, source.tokens)
    out[enc.name] = retrieval_lib.image_text_retrieval(
      images, texts, tuple(config.eval.retrieval_ks)
    )
  return out
