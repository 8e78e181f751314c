r"""MoCo v2 on Fashion-MNIST: a CPU demo on the same network and budget as the SimCLR demo.

Command:
  python -m sslax.main --config configs/mocov2_fashion_mnist.py --workdir runs/mocov2_fashion_mnist

Runtime on 2 CPU cores: not yet measured end to end. 25-step throughput probes on the shared
2-core x86 machine (other jobs running) gave 500-540 img/s for this config where the SimCLR
demo gave 280-310 img/s in the same session (one backward pass instead of two), so expect
less than the SimCLR demo's 8 min of training (~5-6 min) plus ~1.5 min of evaluation.
Expected accuracy of the full run: not measured. At 300 steps (benchmarks/learning.py, 1.28
epochs, seed 0, 2026-11-30, 0.3.0 code): kNN k=20 / k=200 / linear 75.9 / 71.3 / 76.7 against the same
network at random init 51.1 / 44.2 / 55.1 and raw pixels 80.1 / 73.4 / 83.3 (README table).

Recipe: ResNet-10 x1/4 with the small-image stem (as configs/simclr_fashion_mnist.py), MoCo v2's
MLP head (512 hidden here, 128 out), temperature 0.2, shuffling BN over 8 groups of 32 as
in the paper's 8-GPU runs, a queue of 4096 keys (16 batches). The key encoder momentum is
0.99 instead of the paper's 0.999: at 0.999 the key encoder would average over ~1000 steps,
longer than this whole 900-step run. Augmentation is MoCo v2's "aug+" (crop scale 0.2-1,
colour jitter 0.4/0.4/0.4/0.1 = strength 0.5, p=0.8, grayscale 0.2) without blur, which at
28 px mostly erases the image. AdamW as in the SimCLR demo (the paper's SGD at lr 0.03 is
tuned for 200 ImageNet epochs).
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("mocov2")
  config.augment.crop_scale = (0.2, 1.0)
  config.augment.jitter_strength = 0.5
  config.mocov2.momentum = 0.99
  config.mocov2.queue_size = 4096
  config.mocov2.proj_hidden_dim = 512
  return config
