r"""Context encoder (inpainting) on Fashion-MNIST: a CPU demo with the SimCLR demo's network.

Command:
  python -m sslax.main --config configs/inpainting_fashion_mnist.py --workdir runs/inpainting_fashion_mnist

The central 14x14 square of each 28x28 image is hidden (filled with 0.5) and reconstructed by
a small upsampling decoder from the ResNet's last 4x4 map; L2 loss on the hole.

Runtime and accuracy: see benchmarks/results/learning.md, row "inpainting" (300 steps of this
config, batch 256, on the shared 2-core CPU machine); the full 900-step run is not measured.
"""

from sslax.config import base_config


def get_config():
  config = base_config()
  config.method = "inpainting"
  config.dataset.name = "fashion_mnist"
  config.dataset.image_size = 28
  config.batch_size = 256
  config.total_steps = 900  # ~3.8 epochs

  config.model.depth = 10  # the SimCLR demo's backbone
  config.model.width = 0.25
  config.model.stem = "small"

  config.inpainting.mask = "center"
  config.inpainting.mask_fraction = 0.5
  config.inpainting.fill_value = 0.5
  config.inpainting.decoder_upsamples = 3  # 4x4 -> 32x32, resized to 28x28
  config.inpainting.decoder_width = 64
  config.inpainting.crop_scale = (0.5, 1.0)

  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 2e-3
  config.optimizer.lr_scaling = "none"
  config.optimizer.weight_decay = 1e-4
  config.optimizer.warmup_epochs = 0.5

  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  return config
