r"""MoCo v3 with a tiny ViT on Fashion-MNIST: a CPU demo.

Command:
  python -m sslax.main --config configs/mocov3_vit_fashion_mnist.py --workdir runs/mocov3_vit_fashion_mnist

Runtime and accuracy: the full run is not measured. At 300 steps (benchmarks/learning.py, 1.28
epochs, measured 2026-11-30 on the 2-core CPU while other jobs shared it, 18 min wall there):
kNN k=20 77.1%, k=200 72.8%, linear 76.6%, against the same ViT at random init 71.9 / 62.9 /
74.9 and raw pixels 80.1 / 73.4 / 83.3. (Random tiny-ViT features of 28 px images are strong;
the ResNet demos' random init is ~51% kNN.)

Network: ViT "custom" width 128, depth 4, 4 heads, patch 4 (7 x 7 = 49 tokens at 28 px),
fixed 2D sin-cos position embeddings and a class token (as MoCo v3), its random patch
projection frozen (`mocov3.freeze_patch_embed`, MoCo v3 sec. 4.1). The reference's `MoCo_ViT`
heads, every Linear bias-free: projector 128 -> 512 -> 512 -> 128 and predictor 128 -> 512 ->
128, each with a BN without affine on the output. Symmetric InfoNCE over the global batch of
256 at tau = 0.2 (the ViT default, scaled by 2 tau); momentum encoder EMA 0.99 -> 1 (cosine over
the run, the paper's ViT value). AdamW (the paper's ViT optimizer) at a fixed lr 1e-3 with a
short warmup; weight decay 0.1 as in the paper. Augmentations: BYOL's asymmetric recipe as in
MoCo v3 (blur 1.0 / 0.1 and solarize 0.0 / 0.2; at 28 px the blur kernel is tiny), crop scale
(0.2, 1) because 28 px Fashion-MNIST crops at 8% of the area hold almost nothing.
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("mocov3", backbone="vit_tiny")
  config.model.posemb = "sincos2d"
  config.augment.crop_scale = (0.2, 1.0)
  config.mocov3.proj_hidden_dim = 512
  config.mocov3.proj_dim = 128
  config.mocov3.pred_hidden_dim = 512
  config.mocov3.freeze_patch_embed = True
  config.optimizer.base_lr = 1e-3
  config.optimizer.weight_decay = 0.1
  config.optimizer.warmup_epochs = 0.25
  return config
