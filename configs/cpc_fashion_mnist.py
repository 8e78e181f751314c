r"""CPC v2 on Fashion-MNIST: a CPU demo with the SimCLR demo's network as the patch encoder.

Command:
  python -m sslax.main --config configs/cpc_fashion_mnist.py --workdir runs/cpc_fashion_mnist

Patches: each 28 px view is cut into a 6 x 6 grid of 8 px patches every 4 px (half-overlapping,
as CPC's 7 x 7 grid of 64 px patches every 32 px on 256 px images), 36 patches per image
through ResNet-10 x1/4 (128-d features each); the masked context network (5 blocks of width
256) predicts the patches 1, 2 and 3 rows below; InfoNCE over all 9216 patches of the batch.
Evaluation: the mean over the same grid of the patch features. Views: crops of scale 0.5-1,
flips, brightness and contrast jitter. AdamW as in configs/simclr_fashion_mnist.py.

Runtime and accuracy: see benchmarks/results/learning.md, row "cpc" (300 steps of this config,
batch 256, on the shared 2-core CPU machine); the full run is not measured.
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("cpc")  # ResNet-10 x1/4, AdamW, 900 steps of batch 256
  config.cpc.patch_size = 8
  config.cpc.patch_stride = 4
  config.augment.crop_scale = (0.5, 1.0)
  config.augment.grayscale_prob = 0.0
  return config
