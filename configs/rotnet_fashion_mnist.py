r"""RotNet on Fashion-MNIST: a CPU demo on the SimCLR demo's network.

Command:
  python -m sslax.main --config configs/rotnet_fashion_mnist.py --workdir runs/rotnet_fashion_mnist

Runtime and accuracy: the full 900-step run is not measured. At 300 steps (benchmarks/learning.py,
1.28 epochs, measured 2026-11-30 on the 2-core CPU while other jobs shared it): kNN k=20 77.6%,
k=200 70.9%, linear 79.0% (random init 51.1 / 44.2 / 55.1; raw pixels 80.1 / 73.4 / 83.3);
rotation accuracy 93.3% (chance 25%); 24.1 min wall on the loaded machine.

Choices: all four rotations of every image (4B = 1024 inputs per step of 256 images, the
paper's best setting), so a step costs about twice SimCLR's two views. Augmentation as in the
paper's CIFAR runs: random crops and horizontal flips only (crop scale 0.5-1 instead of
padding + crop). ResNet-10 x1/4 with the small-image stem and AdamW as in
configs/simclr_fashion_mnist.py; a 2-layer MLP head (512 hidden) on the pooled features.
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("rotnet")  # the defaults: all 4 rotations, 2-layer head
  config.augment.crop_scale = (0.5, 1.0)
  config.augment.jitter_prob = 0.0
  config.augment.grayscale_prob = 0.0
  return config
