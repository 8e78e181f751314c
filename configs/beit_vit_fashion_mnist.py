r"""BEiT (v2's visual tokens) with a tiny ViT on Fashion-MNIST: a CPU demo, the second stage
after the tokenizer of configs/vqkd_vit_fashion_mnist.py.

Commands (TOKENIZER_DIR: a finished vqkd run; default runs/vqkd_vit_fashion_mnist):
  python -m sslax.main --config configs/dino_vit_fashion_mnist.py --workdir runs/dino_vit_fashion_mnist
  python -m sslax.main --config configs/vqkd_vit_fashion_mnist.py:runs/dino_vit_fashion_mnist \
    --workdir runs/vqkd_vit_fashion_mnist
  python -m sslax.main --config configs/beit_vit_fashion_mnist.py:runs/vqkd_vit_fashion_mnist \
    --workdir runs/beit_vit_fashion_mnist
Fine-tune the result and the random-init ViT with the same recipe (BEiT's protocol):
  python -m sslax.evaluate --workdir runs/beit_vit_fashion_mnist --protocol finetune

With `:TOKENIZER_DIR` the config reads DIR/config.json and pins what BEiT trains on:
beit.tokenizer_step (DIR's newest checkpoint now) and beit.tokenizer_config_sha256 (the hash
of DIR/config.json), so the run's config.json names the tokenizer exactly, and the run fails
if DIR changes; codebook size and dimension are copied from DIR. Every BEiT checkpoint also
holds the tokenizer's identity (method_state["tokenizer_identity"]) and weights.

Measured 2026-11-30 (benchmarks/learning.py --methods beit_vit: this config's 900 steps x batch
256, seed 0; 2-core AMD EPYC shared with other jobs, 41 min), on the 300-step tokenizer of
configs/vqkd_vit_fashion_mnist.py distilled from the dinov2_vit run (256 codes, 51.6% used on
the test split): fine-tuned with the recipe below (3 epochs of the first 10k train images),
mean of fine-tuning seeds 0, 1, 2: 64.3% vs 57.7% for the same ViT from random init (+6.5; per
seed +6.9, +2.8, +9.9); frozen features kNN k=20 68.7 / linear 72.2 vs random init 62.0 / 65.8;
masked-token accuracy 39%. After 300 steps (28% masked-token accuracy) one fine-tune seed gave
59.3% vs 58.0% (+1.3): BEiT needs the longer run.

Recipe (sslax/methods/beit.py; the reference: microsoft/unilm beit2/PRETRAINING.md, ViT-B/16,
batch 2048, 300 or 1600 epochs):
  same: block-wise masking of ~38% of the patches (75 of 196 there, 19 of 49 here) with
    blocks of at least 8% of the grid (16 of 196, 4 of 49) and aspect 0.3-3.3, masked
    patches replaced by a learned mask token, a linear head over the codebook, cross-entropy
    on the masked patches only; LayerScale 0.1; a shared relative position bias and no
    absolute position embeddings; AdamW lr 1.5e-3 (not batch-scaled), weight decay 0.05,
    gradient clip 3.0, b2 0.98 (the 300-epoch recipe); colour jitter 0.4 / 0.4 / 0.4 (no
    hue), flip, random resized crop (0.2, 1); no stochastic depth (300 epochs).
  different: the tiny ViT (width 128, depth 4, 4 heads, patch 4), 900 steps of batch 256
    (~3.8 epochs), half an epoch of warmup (10 epochs); no patch aggregation (BEiT v2's
    cls_pt head: not implemented, see sslax/methods/beit.py); the tokenizer is sslax's tiny
    VQ-KD distilled from sslax's DINO tiny ViT, not the CLIP-distilled 8192-code tokenizer.
Fine-tuning: MAE's CPU recipe (configs/mae_vit_fashion_mnist.py: 3 epochs of 10k labels, lr
3e-3, layer decay 0.75, label smoothing 0.1, mean pooling + fc_norm); BEiT v2 fine-tunes ViT-B
100 epochs, lr 5e-4 at batch 1024, layer decay 0.65 (300 epochs) / 0.6 (1600), drop path 0.1 /
0.2, mixup and cutmix (get_started_for_image_classification.md).
"""

from sslax.methods.vqkd import read_run_config, run_identity
from sslax.presets import fashion_mnist_cpu

DEFAULT_TOKENIZER = "runs/vqkd_vit_fashion_mnist"  # configs/vqkd_vit_fashion_mnist.py's command


def get_config(tokenizer_workdir=None):
  config = fashion_mnist_cpu("beit", backbone="vit_tiny")
  config.model.mask_token = True
  config.model.posemb = "none"  # --abs_pos_emb False
  config.model.rel_pos_bias = "shared"  # --rel_pos_bias (shared by every block)
  config.model.layerscale_init = 0.1  # --layer_scale_init_value 0.1 (ViT-B)
  config.model.pool = "gap"  # fine-tuning and the probes use the mean of the patch tokens
  config.beit.tokenizer_workdir = tokenizer_workdir or DEFAULT_TOKENIZER
  config.beit.codebook_size = 512  # configs/vqkd_vit_fashion_mnist.py's
  config.beit.num_mask_patches = 19
  config.beit.min_mask_patches_per_block = 4
  if tokenizer_workdir:  # pin the tokenizer: its newest step and config hash, its codebook
    tokenizer = read_run_config(tokenizer_workdir, "beit.tokenizer_workdir", "train it first")
    identity = run_identity(tokenizer_workdir, key="beit.tokenizer_workdir")
    config.beit.tokenizer_step = identity["step"]
    config.beit.tokenizer_config_sha256 = identity["config_sha256"]
    config.beit.codebook_size = tokenizer["vqkd"]["num_codes"]
    config.beit.codebook_dim = tokenizer["vqkd"]["code_dim"]
  config.augment.crop_scale = (0.2, 1.0)
  config.augment.jitter_prob = 1.0  # ColorJitter(0.4, 0.4, 0.4) on every image
  config.augment.brightness = config.augment.contrast = config.augment.saturation = 0.4
  config.augment.hue = 0.0
  config.augment.grayscale_prob = 0.0
  config.optimizer.base_lr = 1.5e-3
  config.optimizer.b2 = 0.98
  config.optimizer.weight_decay = 0.05
  config.optimizer.grad_clip_norm = 3.0
  config.eval.finetune_epochs = 3
  config.eval.finetune_batch_size = 256
  config.eval.finetune_optimizer = "adamw"
  config.eval.finetune_lr = 3e-3
  config.eval.finetune_weight_decay = 0.05
  config.eval.finetune_layer_decay = 0.75
  config.eval.finetune_label_smoothing = 0.1
  config.eval.finetune_warmup_epochs = 0.5
  config.eval.finetune_drop_path_rate = 0.0
  config.eval.finetune_crop_scale = (0.5, 1.0)
  config.eval.finetune_fc_norm = True
  return config
