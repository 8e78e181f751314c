r"""InstDisc (non-parametric instance discrimination, Wu et al. 2018) on Fashion-MNIST: a CPU
demo with the SimCLR demo's network.

Command:
  python -m sslax.main --config configs/instdisc_fashion_mnist.py --workdir runs/instdisc_fashion_mnist

The paper's objective at its settings: a memory bank of one 128-d unit feature per training
image (60k rows), NCE with m = 4096 noise rows per image at temperature 0.07, the bank
updated with momentum 0.5; one view per image (the reference's crops, scale 0.2-1). The
network, optimizer and budget are the CPU demo's (ResNet-10 x1/4, AdamW, 900 steps of batch
256: the bank sees each image ~4 times).

Runtime and accuracy: see benchmarks/results/learning.md, row "instdisc" (300 steps of this
config, batch 256, on the shared 2-core CPU machine); the full run is not measured.
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("instdisc")  # the instdisc defaults: NCE, m = 4096, T = 0.07
  config.augment.crop_scale = (0.2, 1.0)  # main.py: RandomResizedCrop(scale=(0.2, 1.))
  return config
