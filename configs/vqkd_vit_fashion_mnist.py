r"""VQ-KD tokenizer (BEiT v2) with a tiny ViT on Fashion-MNIST, distilled from a DINO tiny ViT:
a CPU demo, the first stage of configs/beit_vit_fashion_mnist.py.

Commands (TEACHER_DIR: a finished sslax ViT run; default runs/dino_vit_fashion_mnist):
  python -m sslax.main --config configs/dino_vit_fashion_mnist.py --workdir runs/dino_vit_fashion_mnist
  python -m sslax.main --config configs/vqkd_vit_fashion_mnist.py:runs/dino_vit_fashion_mnist \
    --workdir runs/vqkd_vit_fashion_mnist
Then BEiT on its tokens: configs/beit_vit_fashion_mnist.py:runs/vqkd_vit_fashion_mnist.

Measured 2026-11-30 (300 of the 900 steps, batch 256; teacher: the dinov2_vit learning-table
run; 2-core AMD EPYC shared with other jobs, ~63-71 img/s; benchmarks/tokenizer_usage.py,
benchmarks/results/tokenizer_usage.json): the distillation loss ends below a constant code's
(lr 1e-3: 0.226 vs 0.248; lr 3e-4: 0.209 vs 0.248), but the test split uses only 12.5% (lr
1e-3, perplexity 24) / 33.4% (lr 3e-4, perplexity 56) of the 512 codes, under the issue's
half. At lr 1e-3 the batch usage rose to 32% by step 150 and fell to 4% at step 200 (peak lr);
lr 3e-4 held 18-43%. The full 900 steps at lower lr are not measured. The log shows
rec_loss (1 - cosine to the teacher's patch features; a constant code scores the spread of
the teacher's features around their mean), quant_loss, codebook_usage and
codebook_perplexity of each global batch and codes_restarted.

Recipe (sslax/methods/vqkd.py; the reference: microsoft/unilm beit2/TOKENIZER.md and
run_vqkd_training.py, ViT-B/16 encoder, 3-block decoder, CLIP ViT-B/16 teacher on ImageNet):
  same: one code per patch, l2-normalised codes of dimension 32, EMA codebook (decay 0.99)
    from the global batch, k-means initialisation on the first batch (10 rounds), commitment
    weight 1, cosine distillation loss, encode / decode task layers Linear-tanh-Linear,
    AdamW (0.9, 0.99), weight decay 1e-4, random resized crop + flip without colour jitter.
  different (CPU budget, 28 px): encoder = the tiny ViT of the other CPU ViT configs (width
    128, depth 4, 4 heads, patch 4: 7 x 7 codes), decoder 1 block of width 128 (the
    reference's 1x768x12 variant has 1 block), 512 codes (8192 for 196 patches x 2048 images
    per batch in the reference; here 49 x 256), dead-code restarts on (threshold 1 assignment
    per batch of EMA usage; the reference has none), lr 1e-3 for 900 steps (the reference:
    5e-5 x B / 128 for 100 epochs), crop scale (0.2, 1) as BEiT's pretraining crops (the
    reference tokenizer: (0.08, 1)), the teacher is sslax's DINO tiny ViT (its final-norm
    patch tokens, EMA teacher weights), not CLIP.
"""

from sslax.presets import fashion_mnist_cpu

DEFAULT_TEACHER = "runs/dino_vit_fashion_mnist"  # configs/dino_vit_fashion_mnist.py's command


def get_config(teacher_workdir=None):
  config = fashion_mnist_cpu("vqkd", backbone="vit_tiny")
  config.vqkd.teacher_workdir = teacher_workdir or DEFAULT_TEACHER
  # The teacher's feature width: DINO's tiny ViT's 128; with :DIR, 0 = read from DIR.
  config.vqkd.decoder_out_dim = 0 if teacher_workdir else 128
  config.vqkd.num_codes = 512
  config.vqkd.code_dim = 32
  config.vqkd.dead_code_threshold = 1.0
  config.vqkd.decoder_width = 128
  config.vqkd.decoder_depth = 1
  config.vqkd.decoder_heads = 4
  config.augment.crop_scale = (0.2, 1.0)
  config.optimizer.base_lr = 1e-3
  config.optimizer.b2 = 0.99
  return config
