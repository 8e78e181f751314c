r"""VQ-KD tokenizer for BEiT v2 on ImageNet-1k: the reference's recipe (microsoft/unilm
beit2/TOKENIZER.md, run_vqkd_training.py, `vqkd_encoder_base_decoder_3x768x12_clip`) with an
sslax teacher in place of CLIP ViT-B/16. Stage 2 of configs/beitv2_vitb16_tpu.py.

Command (Cloud TPU v5e-8, topology v5e:2x4; TEACHER_DIR: an sslax ViT run with patch 16 at
224 px, e.g. configs/dino_vits16_tpu.py's):
  python -m sslax.main --config configs/vqkd_vitb16_tpu.py:gs://BUCKET/dino_vits16 \
    --workdir gs://BUCKET/vqkd_vitb16
Compile check without a teacher run (AOT_OVERRIDES below: a random teacher stands in; never
train with it):
  python -m sslax.aot --config configs/vqkd_vitb16_tpu.py

Published (TOKENIZER.md model zoo, with the CLIP ViT-B/16 teacher): codebook usage 97% of
8192 codes for this 3-block decoder (100% with 1 block). Not measured by us; the teacher here
differs, so the codes do too.

Recipe: encoder ViT-B/16 (its final-norm patch tokens -> Linear-tanh-Linear to 32 dims ->
l2-normalised), 8192 codes of dimension 32, EMA codebook (decay 0.99) over the global batch,
k-means initialisation on the first batch, commitment weight 1; decoder 3 blocks of width 768,
12 heads, patch 1 on the 14 x 14 code grid -> Linear-tanh-Linear to the teacher's width,
cosine loss to the teacher's patch features; batch 512 (8 GPUs x 64), AdamW (0.9, 0.99),
lr 5e-5 x B / 128 = 2e-4 (base_lr 1e-4 with sslax's x B / 256), warm-up 10 epochs from 1e-6,
cosine to 1e-5, weight decay 1e-4, 100 epochs; random resized crop (0.08, 1) + flip, no colour
jitter. bfloat16 compute, params float32.
Deviations: the teacher (an sslax run, its final-norm patch tokens; the reference: CLIP's
patch tokens projected to 512); images in ImageNet mean / std for the tokenizer (the
reference: [-1, 1] pixels), converted to the teacher run's own normalisation; no dead-code
restarts (none in the reference either; `vqkd.dead_code_threshold` adds them).
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:2x4"
# What a compile check (sslax.aot, benchmarks/pod_compile.py) sets: no run to read.
AOT_OVERRIDES = ("--config.vqkd.random_teacher=True", "--config.vqkd.decoder_out_dim=0")


def get_config(teacher_workdir=None):
  config = imagenet_tpu("vqkd", backbone="vit_b16")
  config.vqkd.teacher_workdir = teacher_workdir or ""  # "": fails at start, naming the fix
  # The teacher's feature width (DINO ViT-S/16: 384); with :DIR, 0 = read from DIR.
  config.vqkd.decoder_out_dim = 0 if teacher_workdir else 384
  config.batch_size = 512
  config.total_epochs = 100.0
  config.model.pool = "gap"  # the reference's encoder: mean pooling + fc_norm
  config.model.remat_policy = "dots_with_no_batch_dims_saveable"
  config.augment.crop_scale = (0.08, 1.0)
  config.augment.normalize = "imagenet"
  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 1e-4  # x 512 / 256 = 2e-4
  config.optimizer.b2 = 0.99
  config.optimizer.weight_decay = 1e-4
  config.optimizer.warmup_epochs = 10.0
  config.optimizer.warmup_start_lr = 1e-6
  config.optimizer.end_lr = 1e-5
  return config
