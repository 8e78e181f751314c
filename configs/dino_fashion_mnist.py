r"""DINO with multi-crop on Fashion-MNIST: a CPU demo on the SimCLR demo's network.

Command:
  python -m sslax.main --config configs/dino_fashion_mnist.py --workdir runs/dino_fashion_mnist

Runtime and accuracy: being measured.
"""
from sslax.config import base_config


def get_config():
  config = base_config()
  config.method = "dino"
  config.dataset.name = "fashion_mnist"
  config.dataset.image_size = 28       # the global crops
  config.batch_size = 256
  config.total_steps = 900             # ~3.8 epochs

  config.model.depth = 10
  config.model.width = 0.25
  config.model.stem = "small"

  config.dino.out_dim = 1024
  config.dino.hidden_dim = 512
  config.dino.bottleneck_dim = 128
  config.dino.head_use_bn = True
  config.dino.student_temp = 0.1
  config.dino.teacher_temp = 0.04
  config.dino.warmup_teacher_temp = 0.04
  config.dino.warmup_teacher_temp_epochs = 0
  config.dino.center_momentum = 0.9
  config.dino.momentum_teacher = 0.99
  config.dino.freeze_last_layer_epochs = 0.2
  config.dino.weight_decay_end = -1.0
  config.dino.global_crop_scale = (0.25, 1.0)
  config.dino.global_blur_prob = (0.5, 0.1)
  config.dino.num_local_crops = 4
  config.dino.local_crop_size = 14
  config.dino.local_crop_scale = (0.05, 0.25)

  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 1e-3
  config.optimizer.lr_scaling = "none"
  config.optimizer.weight_decay = 1e-4
  config.optimizer.warmup_epochs = 0.5

  config.log_every_steps = 25
  config.checkpoint_every_steps = 500
  return config
