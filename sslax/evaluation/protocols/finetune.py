"""Fine-tuning protocols: the backbone + a linear head trained end to end on all labels
(finetune) or on class-balanced 1% / 10% subsets, or SimCLR v2's subset lists (lowshot; the
chosen ids go to DIR/lowshot/).

finetune also fine-tunes the random-init network (config.eval.baselines) with the same recipe,
seed and data order: MAE's paper judges pretraining by this difference, not by frozen features.
"""

from __future__ import annotations

import os

import jax

from sslax import workdir as workdir_lib
from sslax.data import sources
from sslax.evaluation import finetune as finetune_lib
from sslax.evaluation.protocols.registry import register


def _finetune(enc, config, train_src, test_src) -> dict:
  if enc.is_raw_pixels:
    raise ValueError("raw pixels have no network to fine-tune; use the knn or linear protocol.")
  ev = config.eval
  return finetune_lib.finetune(
    enc.module,
    enc.variables,
    train_src,
    test_src,
    num_classes=int(train_src.num_classes),
    image_size=enc.image_size,
    mesh=enc.mesh,
    epochs=ev.finetune_epochs,
    batch_size=ev.finetune_batch_size,
    eval_batch_size=ev.batch_size,
    optimizer=ev.finetune_optimizer,
    learning_rate=ev.finetune_lr,
    weight_decay=ev.finetune_weight_decay,
    crop_scale=tuple(ev.finetune_crop_scale),
    seed=config.seed,
    layer_decay=ev.finetune_layer_decay,
    label_smoothing=ev.finetune_label_smoothing,
    warmup_epochs=ev.finetune_warmup_epochs,
    drop_path_rate=ev.finetune_drop_path_rate,
    b2=ev.finetune_b2,
    fc_norm=ev.finetune_fc_norm,
    **enc.preprocessing,
  )


def _train_test_sources(config):
  ds = config.dataset
  train_src = sources.load_source(config, ds.train_split, config.eval.num_train_examples)
  return train_src, sources.load_source(config, ds.test_split)


@register(
  "finetune",
  summary="backbone + linear head fine-tuned end to end on all train labels (SGD or AdamW, "
  "layer-wise lr decay, label smoothing, warmup, drop path: config.eval.finetune_*); baseline: "
  "the random-init network fine-tuned the same way",
  baselines=("random_init",),
)
def finetune(encoders, ctx) -> dict:
  train_src, test_src = _train_test_sources(ctx.config)
  return {enc.name: _finetune(enc, ctx.config, train_src, test_src) for enc in encoders}


@register(
  "lowshot",
  summary="fine-tuning on class-balanced label subsets (--fractions 0.01,0.1) or on subset "
  "lists (eval.lowshot_files: SimCLR v2's 1percent.txt / 10percent.txt); the chosen ids are "
  "saved to DIR/lowshot/",
)
def lowshot(encoders, ctx) -> dict:
  """Fine-tunes on each class-balanced fraction of the labels (drawn from eval.lowshot_seed), or
  on each list of eval.lowshot_files when given. Subsets are chosen from the source's labels and
  file names alone (any random-access source: in memory, image folder, record shards), so
  choosing one at ImageNet size reads no image. For a resumable, sharded fine-tuning run of its
  own, use configs/lowshot.py:DIR (the trainer, `dataset.subset_*`)."""
  config, ev = ctx.config, ctx.config.eval
  train_src, test_src = _train_test_sources(config)
  files = tuple(ev.get("lowshot_files", ()) or ())
  # Every subset is chosen (and a bad list or a source without cheap labels fails) before any
  # fine-tuning starts.
  choices = (
    [(os.path.splitext(os.path.basename(f))[0], dict(file=f)) for f in files]
    if files
    else [(f"{100 * f:g}pct", dict(fraction=f, seed=ev.lowshot_seed)) for f in ev.lowshot_fractions]
  )
  subsets = {}
  for name, how in choices:
    ids, info = sources.subsets.choose(train_src, **how)
    path = None
    if ctx.workdir is not None:
      stem = f"subset_{name}_seed{ev.lowshot_seed}" if "fraction" in how else f"subset_{name}"
      path = os.path.join(workdir_lib.output_dir(ctx.workdir, "lowshot"), stem + ".json")
      if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # "ids" last: the file reads from the top (fraction or list, sizes, per class).
        record = {k: v for k, v in info.items() if k not in ("ids", "num_split_examples")}
        workdir_lib.write_json(
          path,
          {
            **record,
            "split": config.dataset.train_split,
            "num_train_examples": info["num_split_examples"],
            "ids": info["ids"],
          },
        )
    subsets[name] = (how, ids, path)
  out = {}
  for enc in encoders:
    out[enc.name] = {
      name: dict(
        _finetune(enc, config, finetune_lib.subset_source(train_src, ids), test_src),
        **({"fraction": how["fraction"]} if "fraction" in how else {"subset_list": how["file"]}),
        subset_file=path,
      )
      for name, (how, ids, path) in subsets.items()
    }
  return out
