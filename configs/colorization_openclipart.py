r"""Colorization on Open Clip Art (colour PNGs, 22 categories): a CPU demo.

Command (get the data once with `bash scripts/get_image_text_data.sh`):
  python -m sslax.main --config configs/colorization_openclipart.py --workdir runs/colorization_openclipart

The network sees the CIE L channel of 32 px images and predicts one of 261 ab bins (10-unit
grid) per pixel of an 8x8 map (1/4 resolution, as the paper), with soft 5-NN targets and
class rebalancing (lambda 0.5). Split: 6,553 train / 1,565 test images (a hash of the path
puts 20% in test); decoding all PNGs takes a few minutes the first time, then an .npz cache
beside the data is used.

Runtime and accuracy: see benchmarks/results/learning.md, row "colorization (openclipart)"
(300 steps, batch 256, on the shared 2-core CPU machine); the full run is not measured.
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  # The colorization defaults are this recipe: 10-unit ab grid, soft encoding, rebalancing,
  # 8x8 predictions (target stride 4, the ResNet's 4x4 map upsampled once), crops 0.5-1.
  config = fashion_mnist_cpu("colorization")  # 900 steps: ~35 epochs of 6.5k images
  config.dataset.name = "openclipart"
  config.dataset.image_size = 32
  return config
