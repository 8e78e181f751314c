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

Runtime and accuracy: see benchmarks/results/learning.md, row "exemplar" (300 steps of this
config, batch 256, on the shared 2-core CPU machine); the full run is not measured.
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
