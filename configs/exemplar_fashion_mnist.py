r"""Exemplar-CNN on Fashion-MNIST: a CPU demo with the SimCLR demo's network.

Command:
  python -m sslax.main --config configs/exemplar_fashion_mnist.py --workdir runs/exemplar_fashion_mnist

Seed images: 2048 of the 60k training images (exemplar.subset_seed 0), each its own surrogate
class; the stream reads only these (an "epoch" is one pass over them: 8 steps of batch 256), so
the 900 steps show each seed image about 110 times, each time transformed anew: crops of scale
0.3-1 (the paper's translation and scaling), flips, brightness and contrast jitter on every
view (its contrast transforms; grey images have no colour) and rotations up to +-20 degrees.
ResNet-10 x1/4 (128-d features) -> a linear classifier over the 2048 classes, AdamW as in
configs/simclr_fashion_mnist.py, 120 warmup steps (15 passes over the seeds).

Measured (benchmarks/learning.py: 300 steps of batch 256 = 37.5 passes over the seeds, not
this config's 900; seed 0; Fashion-MNIST test set, kNN bank / probe train set the first 10k
train images):
  pretrained   kNN k=20 72.8%  kNN k=200 64.4%  linear probe 73.8%  (pretext accuracy 0.45%,
               chance 0.05%)
  random init  kNN k=20 51.1%  kNN k=200 44.2%  linear probe 55.1%
  raw pixels   kNN k=20 80.1%  kNN k=200 73.4%  linear probe 83.3%
Runtime: 8.4 min for those 300 steps plus evaluation on the 2-core AMD EPYC CPU while other
jobs shared it (200 img/s). The full 900 steps: not measured.
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("exemplar")  # ResNet-10 x1/4, AdamW, 900 steps of batch 256
  config.exemplar.num_classes = 2048
  config.optimizer.warmup_epochs = 15.0  # passes over the 2048 seed images: 120 steps
  config.augment.crop_scale = (0.3, 1.0)
  config.augment.jitter_prob = 1.0
  config.augment.grayscale_prob = 0.0
  return config
