r"""SimSiam on Fashion-MNIST: a CPU demo with the SimCLR demo's network, data and optimizer.

Command:
  python -m sslax.main --config configs/simsiam_fashion_mnist.py --workdir runs/simsiam_fashion_mnist

Runtime on 2 CPU cores: not yet measured end to end. Each step costs about what a SimCLR step does
(2 x 256 crops through the backbone, plus a small predictor).
A 40-step timing (2026-11-24, on the shared 2-core machine under load ~4) ran at 315-370 img/s
where the SimCLR demo, timed the same way, ran at 350-390 img/s (490 img/s unloaded, ~8 min
of training): expect roughly 8-11 min of training plus ~1.5 min of evaluation.

Expected accuracy of the full run: not measured. At 300 steps (benchmarks/learning.py, 1.28
epochs, seed 0, 2026-11-30, 0.3.0 code): kNN k=20 / k=200 / linear 72.2 / 66.8 / 73.1 against the same
network at random init 51.1 / 44.2 / 55.1 and raw pixels 80.1 / 73.4 / 83.3 (README table).

The predictor's lr follows the schedule with the rest (`simsiam.fix_pred_lr=False`): the
README's 300-step learning-table row was measured that way; the reference's constant
predictor lr (the method default, as configs/simsiam_tpu.py) is not yet measured here.
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("simsiam")
  config.augment.crop_scale = (0.2, 1.0)
  # The paper's 4:1 predictor bottleneck, at the demo's width.
  config.simsiam.proj_hidden_dim = 512
  config.simsiam.proj_dim = 512
  config.simsiam.pred_hidden_dim = 128
  config.simsiam.fix_pred_lr = False  # as the measured learning-table row; see above
  return config
