r"""How much of its codebook a VQ-KD tokenizer run uses on the test split (issue 19, acceptance 2).

  python benchmarks/tokenizer_usage.py --workdir runs/vqkd_vit_fashion_mnist [--step -1]

Encodes every test image with the run's encoder (centre view, the run's input normalisation),
assigns each patch its nearest code, and prints / writes JSON: the fraction of codes used at
least once, the perplexity exp(H) of the code histogram (K if uniform), and the last logged
training distillation loss next to the constant-code floor (`rec_loss_constant_code`: the
best loss of a tokenizer that gives every patch one code).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import ml_collections
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sslax import workdir as workdir_lib  # noqa: E402
from sslax.data import pipeline, sources  # noqa: E402
from sslax.losses import vq  # noqa: E402
from sslax.methods import vqkd  # noqa: E402
from sslax.models import make_backbone  # noqa: E402


def last_metrics(workdir: str) -> dict:
  path = os.path.join(workdir, "metrics.jsonl")
  lines = open(path).read().splitlines() if os.path.exists(path) else []
  return json.loads(lines[-1]) if lines else {}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--step", type=int, default=-1)
  parser.add_argument("--batch", type=int, default=1000)
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  config = workdir_lib.load_config(args.workdir)
  if config.method != "vqkd":
    raise SystemExit(f"{args.workdir} is a {config.method!r} run, not a vqkd tokenizer.")
  tree, step = vqkd.load_run_checkpoint(args.workdir, args.step, "--workdir")
  params = {k: tree["params"][k] for k in ("backbone", "quant_proj")}
  codebook = tree["method_state"]["codebook"]
  network = vqkd.VQKDNetwork(
    backbone=make_backbone(ml_collections.ConfigDict(config.model.to_dict())),
    code_dim=config.vqkd.code_dim,
  )
  encode = jax.jit(lambda images: vqkd.tokenizer_codes(network, params, codebook, images))
  source = sources.load_source(config, config.dataset.test_split)
  counts = np.zeros((codebook.shape[0],), np.int64)
  for batch in pipeline.eval_batches(
    source,
    image_size=config.dataset.image_size,
    global_batch=args.batch,
    channels=sources.image_channels(source),
    crop_fraction=config.eval.crop_fraction,
    normalize=config.augment.normalize,
  ):
    codes = np.asarray(encode(batch["image"]))[np.asarray(batch["mask"])]
    counts += np.bincount(codes.reshape(-1), minlength=counts.shape[0])
  usage, perplexity = (float(x) for x in vq.code_statistics(counts))
  train = last_metrics(args.workdir)
  result = {
    "workdir": args.workdir,
    "step": step,
    "num_codes": int(counts.shape[0]),
    "test_patches": int(counts.sum()),
    "test_codebook_usage": usage,
    "test_codebook_perplexity": perplexity,
    "train_rec_loss": train.get("rec_loss"),
    "train_rec_loss_constant_code": train.get("rec_loss_constant_code"),
    "train_metrics_step": train.get("step"),
  }
  print(json.dumps(result, indent=2))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
