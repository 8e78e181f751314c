r"""CMC (Contrastive Multiview Coding, Tian et al. 2019) on Open Clip Art: L vs ab, a CPU demo.

Command (get the data once with `bash scripts/get_image_text_data.sh`):
  python -m sslax.main --config configs/cmc_openclipart.py --workdir runs/cmc_openclipart

Two ResNet-10s at 1/8 width, one on the CIE L channel and one on ab of 32 px crops (scale
0.2-1, flips, no colour jitter), together as wide as the demo's single 1/4-width network (the
reference's resnet50v1 also splits one ResNet's width between the views). Loss: L -> ab plus
ab -> L with the other images of the batch as negatives, temperature 0.07 (the memory-bank
variant: `--config.cmc.negatives=memory_bank`). Evaluation uses [f_L, f_ab], 128-d.
Split: 6,553 train / 1,565 test images of 22 categories.

Runtime and accuracy: see benchmarks/results/learning.md, row "cmc (openclipart)" (300 steps,
batch 256, on the shared 2-core CPU machine); the full run is not measured.
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("cmc")  # in-batch negatives, T = 0.07; 900 steps: ~35 epochs
  config.dataset.name = "openclipart"
  config.dataset.image_size = 32
  config.model.width = 0.125  # per view: the two encoders share the demo network's width
  config.augment.crop_scale = (0.2, 1.0)  # train_CMC.py --crop_low (default 0.2)
  return config
