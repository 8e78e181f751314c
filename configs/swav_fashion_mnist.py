r"""SwAV with multi-crop on Fashion-MNIST: a CPU demo on the SimCLR demo's network.

Command:
  python -m sslax.main --config configs/swav_fashion_mnist.py --workdir runs/swav_fashion_mnist

Runtime on 2 CPU cores: not yet measured end to end. 25-step throughput probes on the shared
2-core x86 machine (other jobs running) gave 140-275 img/s for this config against
280-310 img/s for the SimCLR demo in the same session, so expect 1-2x the SimCLR demo's
8 min of training (~9-16 min) plus ~1.5 min of evaluation.
Expected accuracy: not yet measured.

Multi-crop chosen for 28 px images: 2 global crops of 28 px (scale 0.14-1) + 4 local crops of
14 px (scale 0.05-0.14): the paper's crop scales, local crops at half the global side
(ImageNet: 96/224), and 4 instead of 6 local crops so a step costs ~1.5x the pixels of
SimCLR's two 28 px views. Codes: Sinkhorn-Knopp, 3 iterations, epsilon 0.05, over the global batch of
256; temperature 0.1; 100 prototypes (untuned; ImageNet uses 3000 for 1000 classes) frozen for
the first 100 steps; no queue (the paper uses one only for small batches on long runs).
ResNet-10 x1/4 with the small-image stem and AdamW as in configs/simclr_fashion_mnist.py;
colour jitter strength 1.0 as in SwAV (grey images: brightness and contrast only), no blur at
28 px, which mostly erases the image.
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("swav")  # dataset.image_size 28: the global crops
  config.swav.num_prototypes = 100
  config.swav.proj_hidden_dim = 512
  config.swav.num_local_crops = 4
  config.swav.local_crop_size = 14
  config.swav.freeze_prototypes_steps = 100
  return config
