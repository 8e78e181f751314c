r"""Relative patch position on Fashion-MNIST: a CPU demo on the SimCLR demo's network.

Command:
  python -m sslax.main --config configs/relative_patch_fashion_mnist.py --workdir runs/relative_patch_fashion_mnist

Measured (benchmarks/learning.py: 300 steps of batch 256 = 1.28 epochs, not this config's 900;
seed 0; Fashion-MNIST test set, kNN bank / probe train set the first 10k train images;
2026-11-30, 0.3.0 code):
  pretrained   kNN k=20 69.7%  kNN k=200 58.9%  linear probe 74.8%  (pretext accuracy 49.4%,
               chance 12.5%)
  random init  kNN k=20 48.1%  kNN k=200 43.0%  linear probe 55.0%
  raw pixels   kNN k=20 80.7%  kNN k=200 74.1%  linear probe 82.9%  (48 px)
Runtime: 5.2 min for those 300 steps plus evaluation on a 2-core AMD EPYC shared with one
other job (~360 img/s); the full 900 steps: not measured.

Sizes: as in configs/jigsaw_fashion_mnist.py the view is upsampled to 48 px
(dataset.image_size = 48, also the evaluation size): a 3 x 3 grid of 16 px cells with 12 px
patches (up to 4 px of jitter each, gaps of 0-8 px between the centre and its neighbour; the
paper: 96 px patches, 48 px gap, up to 7 px jitter). Two 12 px patches per image are cheap
(288 pixels), so a step costs far less than SimCLR's. Chromatic aberration does not apply to
grey images (not handled). Crops of scale 0.6-1 and flips. ResNet-10 x1/4, small stem, AdamW
as in configs/simclr_fashion_mnist.py; head: concatenated 2 x 128 features -> 512 -> 8.
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("relative_patch")  # the defaults: 12 px patches, 512-wide head
  config.dataset.image_size = 48
  config.augment.crop_scale = (0.6, 1.0)
  config.augment.jitter_prob = 0.0
  config.augment.grayscale_prob = 0.0
  return config
