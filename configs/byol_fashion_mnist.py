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

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("byol")
  config.augment.crop_scale = (0.2, 1.0)
  config.byol.proj_hidden_dim = 512
  config.byol.proj_dim = 128
  config.byol.pred_hidden_dim = 512
  # A short run: the target must follow the online net faster than at ImageNet scale
  # (0.996 over ~300k steps); 0.99 is the usual choice for small-data BYOL runs.
  config.byol.base_momentum = 0.99
  return config
