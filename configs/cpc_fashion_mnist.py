r"""CPC v2 on Fashion-MNIST: a CPU demo with the SimCLR demo's network as the patch encoder.

Command:
  python -m sslax.main --config configs/cpc_fashion_mnist.py --workdir runs/cpc_fashion_mnist

Patches: each 28 px view is cut into a 6 x 6 grid of 8 px patches every 4 px (half-overlapping,
as CPC's 7 x 7 grid of 64 px patches every 32 px on 256 px images), 36 patches per image
through ResNet-10 x1/4 (128-d features each); the masked context network (5 blocks of width
256) predicts the patches 1, 2 and 3 rows below; InfoNCE over all 9216 patches of the batch.
Evaluation: the mean over the same grid of the patch features. Views: crops of scale 0.5-1,
flips, brightness and contrast jitter. AdamW as in configs/simclr_fashion_mnist.py.

Measured (benchmarks/learning.py: 300 steps of batch 256 = 1.28 epochs, not this config's 900;
seed 0; Fashion-MNIST test set, kNN bank / probe train set the first 10k train images):
  pretrained   kNN k=20 73.6%  kNN k=200 67.0%  linear probe 75.9%  (cpc_accuracy 13.5% among
               the 9216 patches of a batch; loss per offset k=1/2/3: 3.33 / 4.93 / 6.01)
  random init  kNN k=20 45.2%  kNN k=200 40.7%  linear probe 50.2%
  raw pixels   kNN k=20 80.1%  kNN k=200 73.4%  linear probe 83.3%
Runtime: 54 min for those 300 steps plus evaluation on the 2-core AMD EPYC CPU while other jobs
shared it (25 img/s: 36 patches per image, ~8x a one-view method's step). The full 900 steps:
not measured.
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("cpc")  # ResNet-10 x1/4, AdamW, 900 steps of batch 256
  config.cpc.patch_size = 8
  config.cpc.patch_stride = 4
  config.augment.crop_scale = (0.5, 1.0)
  config.augment.grayscale_prob = 0.0
  return config
