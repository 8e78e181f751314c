r"""Barlow Twins on Fashion-MNIST: a CPU demo with the SimCLR demo's network, data and optimizer.

Command:
  python -m sslax.main --config configs/barlow_twins_fashion_mnist.py --workdir runs/barlow_twins_fashion_mnist

Runtime on 2 CPU cores: not yet measured end to end. Each step costs about what a SimCLR step does
(2 x 256 crops through the backbone, a 512-d projector, a 512 x 512 cross-correlation).
A 40-step timing (2026-11-24, on the shared 2-core machine under load ~4) ran at 295-310 img/s
where the SimCLR demo, timed the same way, ran at 350-390 img/s (490 img/s unloaded, ~8 min
of training): expect roughly 8-11 min of training plus ~1.5 min of evaluation.

Expected accuracy: not yet measured (the SimCLR demo's numbers are in
configs/simclr_fashion_mnist.py; compare against its random-init and raw-pixel rows).
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("barlow_twins")
  config.augment.crop_scale = (0.2, 1.0)
  config.barlow_twins.proj_hidden_dim = 512
  config.barlow_twins.proj_dim = 512  # lambda_offdiag stays the paper's 5e-3: ~2.6 / D at D = 512
  return config
