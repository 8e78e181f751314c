r"""BYOL on Fashion-MNIST: a CPU demo with the SimCLR demo's network, data and optimizer.

Command:
  python -m sslax.main --config configs/byol_fashion_mnist.py --workdir runs/byol_fashion_mnist

Runtime on 2 CPU cores: not yet measured end to end. Each step runs the online network on both
views (forward + backward) and the target network on both (forward only).
A 40-step timing (2026-11-24, on the shared 2-core machine under load ~4) ran at 265-305 img/s
where the SimCLR demo, timed the same way, ran at 350-390 img/s (490 img/s unloaded, ~8 min
of training): expect roughly 8-11 min of training plus ~1.5 min of evaluation.

Expected accuracy: not yet measured (the SimCLR demo's numbers are in
configs/simclr_fashion_mnist.py; compare against its random-init and raw-pixel rows).
"""

from sslax.config import base_config


def get_config():
  config = base_config()
  config.method = "byol"
  config.dataset.name = "fashion_mnist"
  config.dataset.image_size = 28
  config.batch_size = 256
  config.total_steps = 900  # ~3.8 epochs

  # The SimCLR demo's backbone (chosen there by measured learning per CPU-minute).
  config.model.depth = 10
  config.model.width = 0.25
  config.model.stem = "small"

  config.augment.crop_scale = (0.2, 1.0)
  config.byol.proj_hidden_dim = 512
  config.byol.proj_dim = 128
  config.byol.pred_hidden_dim = 512
  # A short run: the target must follow the online net faster than at ImageNet scale
  # (0.996 over ~300k steps); 0.99 is the usual choice for small-data BYOL runs.
  config.byol.base_momentum = 0.99

  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 2e-3
  config.optimizer.lr_scaling = "none"
  config.optimizer.weight_decay = 1e-4
  config.optimizer.warmup_epochs = 0.5

  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  return config
