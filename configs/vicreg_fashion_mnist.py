r"""VICReg on Fashion-MNIST: a CPU demo with the SimCLR demo's network, data and optimizer.

Command:
  python -m sslax.main --config configs/vicreg_fashion_mnist.py --workdir runs/vicreg_fashion_mnist

Runtime on 2 CPU cores: not yet measured end to end. Each step costs about what a SimCLR step does
(2 x 256 crops through the backbone, a 512-d expander, two 512 x 512 covariances).
A 40-step timing (2026-11-24, on the shared 2-core machine under load ~4) ran at 300-335 img/s
where the SimCLR demo, timed the same way, ran at 350-390 img/s (490 img/s unloaded, ~8 min
of training): expect roughly 8-11 min of training plus ~1.5 min of evaluation.

Expected accuracy of the full run: not measured. At 300 steps (benchmarks/learning.py, 1.28
epochs, seed 0, 2026-11-30, 0.3.0 code): kNN k=20 / k=200 / linear 75.0 / 69.8 / 76.2 against the same
network at random init 51.1 / 44.2 / 55.1 and raw pixels 80.1 / 73.4 / 83.3 (README table).
Loss: the method defaults (lambda = mu = 25, nu = 1) with the variance hinge averaged over the
two branches as in the authors' main_vicreg.py (before, it was summed: twice this weight).
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("vicreg")
  config.augment.crop_scale = (0.2, 1.0)
  config.vicreg.proj_hidden_dim = 512
  config.vicreg.proj_dim = 512
  return config
