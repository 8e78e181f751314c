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

from sslax.config import base_config


def get_config():
  config = base_config()
  config.method = "colorization"
  config.dataset.name = "openclipart"
  config.dataset.image_size = 32
  config.batch_size = 256
  config.total_steps = 900  # ~35 epochs of 6.5k images

  config.model.depth = 10  # the SimCLR demo's backbone
  config.model.width = 0.25
  config.model.stem = "small"

  config.colorization.grid = 10.0
  config.colorization.soft_encoding = True
  config.colorization.rebalance = True
  config.colorization.target_stride = 4  # 8x8 predictions
  config.colorization.decoder_upsamples = 1  # the ResNet's 4x4 map -> 8x8
  config.colorization.crop_scale = (0.5, 1.0)

  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 2e-3
  config.optimizer.lr_scaling = "none"
  config.optimizer.weight_decay = 1e-4
  config.optimizer.warmup_epochs = 0.5

  config.eval.num_train_examples = 0  # the whole (small) train split as kNN bank
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  return config
