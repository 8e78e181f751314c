r"""RotNet on Fashion-MNIST: a CPU demo on the SimCLR demo's network.

Command:
  python -m sslax.main --config configs/rotnet_fashion_mnist.py --workdir runs/rotnet_fashion_mnist

Runtime and accuracy: the full 900-step run is not measured. At 300 steps (benchmarks/learning.py,
1.28 epochs, measured 2026-11-25 on the 2-core CPU while other jobs shared it): kNN k=20 77.8%,
k=200 71.2%, linear 79.1% (random init 51.1 / 44.2 / 55.1; raw pixels 80.1 / 73.4 / 83.3);
rotation accuracy 93.3% (chance 25%); 22.5 min wall on the loaded machine.

Choices: all four rotations of every image (4B = 1024 inputs per step of 256 images, the
paper's best setting), so a step costs about twice SimCLR's two views. Augmentation as in the
paper's CIFAR runs: random crops and horizontal flips only (crop scale 0.5-1 instead of
padding + crop). ResNet-10 x1/4 with the small-image stem and AdamW as in
configs/simclr_fashion_mnist.py; a 2-layer MLP head (512 hidden) on the pooled features.
"""

from sslax.config import base_config


def get_config():
  config = base_config()
  config.method = "rotnet"
  config.dataset.name = "fashion_mnist"
  config.dataset.image_size = 28
  config.batch_size = 256
  config.total_steps = 900  # ~3.8 epochs

  config.model.depth = 10
  config.model.width = 0.25
  config.model.stem = "small"

  config.augment.crop_scale = (0.5, 1.0)
  config.augment.flip_prob = 0.5
  config.augment.jitter_prob = 0.0
  config.augment.grayscale_prob = 0.0

  config.rotnet.all_rotations = True
  config.rotnet.head_hidden_dim = 512
  config.rotnet.head_layers = 2

  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 2e-3
  config.optimizer.lr_scaling = "none"
  config.optimizer.weight_decay = 1e-4
  config.optimizer.warmup_epochs = 0.5

  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  return config
