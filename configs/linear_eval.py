r"""Linear evaluation of a pretraining run, the papers' protocol (sslax/methods/linear_eval.py).

Command (DIR: a finished pretraining workdir; the config is built from DIR/config.json):
  python -m sslax.main --config configs/linear_eval.py:DIR --workdir DIR_linear
Without `:DIR` it evaluates the README demo's run (runs/simclr_fashion_mnist).

It trains a linear classifier on DIR's frozen backbone (eval-mode BatchNorm) on random resized
crops + flips with the labels, then scores it on the test set's evaluation view (centre crop on
ImageNet-size data) and appends the top-1 to both workdirs' results.json, printed next to DIR's
fast probe (frozen centre-crop features). It is an ordinary run: preempt it and rerun the same
command to resume.

Recipe (`sslax.presets.linear_eval`; each pod config's docstring names the protocol behind its
quoted accuracy): ImageNet-size data as MoCo v3 `main_lincls.py`, 90 epochs, batch 1024, SGD
momentum 0.9, lr 0.1 x B/256 (ResNet) or 3 x B/256 (MoCo v3 ViT), weight decay 0, cosine
without warmup, RandomResizedCrop (0.08, 1) + flip, evaluation on resize 256 + centre crop 224.
DINO runs: DINO's `eval_linear.py`, 100 epochs at lr 0.001 x B/256 (its ViT-S number also
concatenates the last 4 class tokens; sslax uses the final one). SimCLR and BYOL report the same
protocol with their own optimizers (SimCLR: LARS / Nesterov at batch 4096; BYOL: Nesterov, 80
epochs). 28-32 px data on a CPU: 5 epochs of batch 256 at lr 0.1, crops of scale (0.2, 1).

Measured: see the README's "Evaluation" section.
"""

from sslax.presets import linear_eval


def get_config(pretrained_workdir=None):
  return linear_eval(pretrained_workdir)
