r"""Context encoder (inpainting) on Fashion-MNIST: a CPU demo with the SimCLR demo's network.

Command:
  python -m sslax.main --config configs/inpainting_fashion_mnist.py --workdir runs/inpainting_fashion_mnist

The central 14x14 square of each 28x28 image is hidden (filled with 0.5) and reconstructed by
a small upsampling decoder from the ResNet's last 4x4 map; L2 loss on the hole.

Runtime and accuracy: see benchmarks/results/learning.md, row "inpainting" (300 steps of this
config, batch 256, on the shared 2-core CPU machine); the full 900-step run is not measured.
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  # The method's defaults are this recipe: center mask of half the side, filled with 0.5,
  # decoder of 3 upsamplings (4x4 -> 32x32, resized to 28x28), 64 wide, crops of scale 0.5-1.
  return fashion_mnist_cpu("inpainting")
