r"""Low-shot fine-tuning of a pretraining run on a label subset (SimCLR's semi-supervised protocol).

Command (DIR: a finished pretraining workdir; SUBSET: a fraction, or a subset list file):
  python -m sslax.main --config configs/lowshot.py:DIR --workdir DIR_1pct          # 1% of labels
  python -m sslax.main --config configs/lowshot.py:DIR,0.1 --workdir DIR_10pct
  python -m sslax.main --config configs/lowshot.py:DIR,imagenet_subsets/1percent.txt \
      --workdir DIR_simclr1pct
Without `:DIR` it fine-tunes the README demo's run (runs/simclr_fashion_mnist) on 1%.

It is `configs/linear_eval.py` with the backbone trained too (`linear_eval.finetune`: train-mode
BatchNorm over the global batch, zero-initialised head) on part of the train split
(`dataset.subset_fraction`: a class-balanced fraction drawn from `dataset.subset_seed`; or
`dataset.subset_file`: SimCLR v2's `imagenet_subsets/1percent.txt` / `10percent.txt`, one
training file name per line, matched by name against an image folder or record shards; or a
DIR/lowshot/*.json written by `--protocol lowshot`). The subset is chosen from labels and file
names alone (no image read) and printed with its size. An ordinary run: sharded, preemptible,
resumable; at the end its classifier's top-1 / top-5 on the test split go to both workdirs'
results.json (the pretrained run's record is named linear_eval).

Recipe (`sslax.presets.lowshot`): SimCLR v2's fine-tuning (LARS, lr 0.005 x sqrt(1024) = 0.16,
batch 1024, no weight decay, no warmup, crop + flip only; 60 epochs on 1%, 30 on 10%). SimCLR v2
fine-tunes from the projection head's first layer; sslax from the backbone's output (SimCLR's
choice with all labels), see sslax/methods/linear_eval.py. 28-32 px data on a CPU: SimCLR v1's
Nesterov SGD at lr 0.05 x B/256, batch 256, crops (0.2, 1).

Measured (2026-11-30, AMD EPYC, 2 cores heavily loaded): the README demo's run (its previous
recipe, 900 steps of batch 256 at 28 px) fine-tuned on 1%
of Fashion-MNIST's labels (600 images, 120 steps, ~6 min with the test pass): 71.71 top-1 (the
fast probe with all 60,000 labels: 84.66).
"""

from sslax.presets import lowshot


def get_config(arg=None):
  pretrained_workdir, _, subset = (arg or "").partition(",")
  return lowshot(pretrained_workdir or None, subset or "0.01")
