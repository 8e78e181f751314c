r"""Jigsaw on Fashion-MNIST: a CPU demo on the SimCLR demo's network.

Command:
  python -m sslax.main --config configs/jigsaw_fashion_mnist.py --workdir runs/jigsaw_fashion_mnist

Runtime and accuracy: the full 900-step run is not measured. At 300 steps (benchmarks/learning.py,
1.28 epochs, measured 2026-11-30 with the 0.3.0 code on a 2-core AMD EPYC shared with another
job): kNN k=20 73.6%, k=200 67.1%, linear 76.4% (random init 48.1 / 43.0 / 55.0 at 48 px; raw
pixels 80.7 / 74.1 / 82.9); permutation accuracy 89.2% (chance 1%); 19.5 min wall under that load.

Sizes: 3 x 3 tiles of a 28 px image would be 9 px cells, too small to hold a piece of an object
once jittered, so the view is upsampled to 48 px (dataset.image_size = 48): 16 px cells and
12 px tiles (up to 4 px of jitter per tile, so gaps of 0-8 px; the paper: 75 px cells, 64 px
tiles). Evaluation embeds whole images at the same 48 px, so tiles and evaluation images share
one pixel scale. Nine 12 px tiles are 1296 pixels per image, about SimCLR's two 28 px views.
100 permutations (greedy max-min Hamming, seed 0; the paper's best set has 1000 but a smaller
set learns faster at a small budget). Crops of scale 0.6-1 and flips; no colour jitter, since
per-tile normalisation removes brightness and contrast anyway. ResNet-10 x1/4, small stem,
AdamW as in configs/simclr_fashion_mnist.py; head: concatenated 9 x 128 features -> 512 -> 100.
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("jigsaw")  # the jigsaw defaults: 3 x 3 tiles of 12 px, 100 perms
  config.dataset.image_size = 48
  config.augment.crop_scale = (0.6, 1.0)
  config.augment.jitter_prob = 0.0
  config.augment.grayscale_prob = 0.0
  return config
