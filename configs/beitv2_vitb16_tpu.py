r"""BEiT v2 ViT-B/16 on ImageNet-1k: the reference's pretraining recipe (microsoft/unilm
beit2/PRETRAINING.md, "Base-size", and run_beitv2_pretraining.py's defaults), on visual tokens
from a VQ-KD tokenizer that sslax trains itself.

The published numbers used a tokenizer sslax cannot obtain: VQ-KD distilled from OpenAI CLIP
ViT-B/16 (`vqkd_encoder_base_decoder_3x768x12_clip`, trained on ImageNet-1k with CLIP's
weights as teacher). sslax trains its tokenizer from an sslax teacher instead (stage 2 below,
configs/vqkd_vitb16_tpu.py; e.g. the DINO ViT-S/16 of configs/dino_vits16_tpu.py), so expect
lower accuracy than quoted.
Published (beit2/get_started_for_image_classification.md, model zoo table; ImageNet-1k
fine-tuning top-1 of BEiT v2 ViT-B/16 with the CLIP-distilled tokenizer): 85.0% after 300
pretraining epochs, 85.5% after 1600 (100 fine-tuning epochs each). Not measured by us.

Commands (Cloud TPU v5e-16, topology v5e:4x4, one process per host):
  1. teacher:   python -m sslax.main --config configs/dino_vits16_tpu.py --workdir gs://BUCKET/dino_vits16
  2. tokenizer: python -m sslax.main --config configs/vqkd_vitb16_tpu.py:gs://BUCKET/dino_vits16 \
                  --workdir gs://BUCKET/vqkd_vitb16
  3. BEiT:      python -m sslax.main --config configs/beitv2_vitb16_tpu.py:gs://BUCKET/vqkd_vitb16 \
                  --workdir gs://BUCKET/beitv2_vitb16
  4. fine-tune: python -m sslax.evaluate --workdir gs://BUCKET/beitv2_vitb16 --protocol finetune
Stage 3 reads the tokenizer run's config.json and newest checkpoint when it starts (a local
path, or gs:// where the checkpoint module reads it). Compile check without a tokenizer run
(AOT_OVERRIDES below: a random tokenizer stands in; never train with it):
  python -m sslax.aot --config configs/beitv2_vitb16_tpu.py

Data: TFDS `imagenet2012` in ArrayRecord format, as configs/dino_vits16_tpu.py explains.

Recipe (the reference's 1600-epoch base command): ViT-B/16, LayerScale 0.1, a shared relative
position bias and no absolute position embeddings (--rel_pos_bias, the default; --abs_pos_emb
off), stochastic depth 0.1, a learned mask token; 75 of 196 patches block-masked (blocks >= 16
patches, aspect 0.3-3.3); a linear head over the 8192 codes, cross-entropy on the masked
patches; batch 2048 (16 GPUs x 128), AdamW (0.9, 0.999) eps 1e-8, lr 1.5e-3 (not
batch-scaled), warm-up 10 epochs from 1e-6, cosine to 1e-5, weight decay 0.05, gradient clip
3.0, 1600 epochs (300 with b2 0.98 and no drop path: the short schedule); colour jitter 0.4 /
0.4 / 0.4, flip, random resized crop (0.2, 1), ImageNet mean / std. bfloat16 compute, params
float32, each block rematerialised.
Deviations: no patch aggregation (--early_layers 9 --head_layers 2 --shared_lm_head: the
reference's `beit_base_patch16_224_8k_vocab_cls_pt` adds two blocks over the class token and
layer 9's patch tokens, with a second loss; not implemented, see sslax/methods/beit.py); the
tokenizer sees the crop in its own run's normalisation at 224 px, not [-1, 1] pixels of a
separately (bicubic) resized second input; weight decay on every matrix, not on biases, norms
and 1-D gains (`optimizer.exclude_bias_and_norm`; the reference also exempts the class
token); mask token zero-initialised.
Fine-tuning (stage 4) follows get_started_for_image_classification.md for 1600-epoch base
models: 100 epochs, batch 1024, lr 5e-4, layer decay 0.6, drop path 0.2, weight decay 0.05,
warm-up 20 epochs, label smoothing 0.1, mean pooling + fc_norm; without mixup 0.8 / cutmix 1.0
/ RandAugment, which sslax's fine-tuning does not implement.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"
# What a compile check (sslax.aot, benchmarks/pod_compile.py) sets: no run to read.
AOT_OVERRIDES = ("--config.beit.random_tokenizer=True",)


def get_config(tokenizer_workdir=None):
  config = imagenet_tpu("beit", backbone="vit_b16")
  config.beit.tokenizer_workdir = tokenizer_workdir or ""  # "": fails at start, naming the fix
  config.batch_size = 2048
  config.total_epochs = 1600.0
  config.model.mask_token = True
  config.model.posemb = "none"
  config.model.rel_pos_bias = "shared"
  config.model.layerscale_init = 0.1
  config.model.drop_path_rate = 0.1
  config.model.pool = "gap"
  config.model.remat_policy = "dots_with_no_batch_dims_saveable"
  config.augment.crop_scale = (0.2, 1.0)
  config.augment.jitter_prob = 1.0
  config.augment.brightness = config.augment.contrast = config.augment.saturation = 0.4
  config.augment.hue = 0.0
  config.augment.grayscale_prob = 0.0
  config.augment.normalize = "imagenet"  # --imagenet_default_mean_and_std
  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 1.5e-3
  config.optimizer.lr_scaling = "none"
  config.optimizer.weight_decay = 0.05
  config.optimizer.warmup_epochs = 10.0
  config.optimizer.warmup_start_lr = 1e-6
  config.optimizer.end_lr = 1e-5
  config.optimizer.grad_clip_norm = 3.0
  config.checkpoint_every_steps = 2000
  config.eval.finetune_epochs = 100
  config.eval.finetune_batch_size = 1024
  config.eval.finetune_optimizer = "adamw"
  config.eval.finetune_lr = 5e-4
  config.eval.finetune_weight_decay = 0.05
  config.eval.finetune_layer_decay = 0.6
  config.eval.finetune_label_smoothing = 0.1
  config.eval.finetune_warmup_epochs = 20.0
  config.eval.finetune_drop_path_rate = 0.2
  config.eval.finetune_fc_norm = True
  return config
