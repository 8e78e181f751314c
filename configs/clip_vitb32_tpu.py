r"""CLIP ViT-B/32 at the paper's scale (Radford et al. 2021): batch 32,768, 32 epochs of 400M pairs.

Command (Cloud TPU v5e-256, topology v5e:16x16, one process per host; checked by
`python -m sslax.aot --config configs/clip_vitb32_tpu.py`):
  CONFIG=configs/clip_vitb32_tpu.py WORKDIR=gs://BUCKET/clip_vitb32 launch/tpu_pod.sh all
  python -m sslax.evaluate --workdir gs://BUCKET/clip_vitb32 --protocol zero_shot

Data: 400M (image, caption) pairs are not shipped with anything. Convert the pairs you have
(e.g. a LAION-400M download as WebDataset tars, open_clip's format, or a .jsonl/.csv of image
paths and captions) to record shards once, in parallel and resumable:
  python -m sslax.data.shards --from webdataset --input /data/laion400m/tars \
      --output gs://BUCKET/laion400m_shards --workers 64
(and a held-out split with `--split test`), then point dataset.data_dir at them. Every process
reads only its own rows by index, so a restart resumes mid-epoch exactly and at no cost (tested
at a toy size on generated shards in tests/data/test_shards.py). For a small-scale check,
dataset.name = "coco_captions" (TFDS).

Runtime: not measured by us (the paper reports 12 days on 256 V100s for its largest model,
ViT-L/14; ViT-B/32 needs far less). Expected accuracy: 63.2% zero-shot top-1 on
ImageNet (the CLIP paper's published number for ViT-B/32, prompt ensemble of 80 templates),
not reproduced by us. Protocol: zero-shot, i.e. no training on ImageNet labels: each class's
text embedding, averaged over the prompt templates, classifies the validation images. sslax:
the `--protocol zero_shot` command above, with the 24 templates of dataset.zero_shot_templates
here (not the paper's 80); linear probes are a different protocol (eval.at_end is off here).

Settings from the paper (sec. 2.5 and tables 18-20): AdamW lr 5e-4, beta2 0.98, eps 1e-6,
weight decay 0.2, 2,000 warmup steps then cosine, temperature initialised to 0.07 with the
logit scale capped at 100 (as open_clip: the log-scale parameter clamped to [0, ln 100] after
every optimizer step, never clipped inside the loss), embedding width 512, text transformer
12 layers x 512 wide x 8 heads, context 77, causal mask, EOT pooling. Deviations: sslax's
tokenizer is byte-level (vocab 259) instead of CLIP's 49,152 BPE, so 77 tokens hold 75 bytes
of caption; mixed precision is bfloat16.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:16x16"

NUM_PAIRS = 400_000_000
BATCH = 32_768
STEPS_PER_EPOCH = NUM_PAIRS // BATCH  # 12,207


def get_config():
  # The clip defaults (embeddings 512, log logit scale clamped to [0, ln 100] after each step)
  # and the text tower's (12 layers x 512 wide x 8 heads, context 77, causal, EOT pooling) are
  # the paper's.
  config = imagenet_tpu("clip", backbone="vit_b32")
  # Learned position embeddings, the class token's included (open_clip's 1 + 49 rows): the
  # model defaults (posemb="learn"; sslax.models.vit.ViT cls_pos_embedding).
  config.dataset.name = "shards"  # captioned record shards (python -m sslax.data.shards)
  config.dataset.data_dir = "/data/laion400m_shards"  # your converted pairs
  config.dataset.test_split = "test"
  config.dataset.zero_shot_dataset = "imagenet2012"
  config.dataset.zero_shot_split = "validation"
  config.dataset.zero_shot_templates = (
    "a photo of a {label}.",
    "a bad photo of a {label}.",
    "a photo of many {label}.",
    "a sculpture of a {label}.",
    "a rendering of a {label}.",
    "graffiti of a {label}.",
    "a cropped photo of the {label}.",
    "a tattoo of a {label}.",
    "a bright photo of a {label}.",
    "a photo of a clean {label}.",
    "a photo of a dirty {label}.",
    "a dark photo of the {label}.",
    "a drawing of a {label}.",
    "a photo of my {label}.",
    "the plastic {label}.",
    "a photo of the cool {label}.",
    "a close-up photo of a {label}.",
    "a painting of the {label}.",
    "a pixelated photo of the {label}.",
    "a blurry photo of a {label}.",
    "a photo of the large {label}.",
    "a photo of the small {label}.",
    "itap of a {label}.",
    "a low resolution photo of the {label}.",
  )
  config.batch_size = BATCH
  config.dataset.train_size = NUM_PAIRS  # declared: the run's length is known without the data
  config.total_steps = 32 * STEPS_PER_EPOCH  # 32 epochs
  config.clip.chunked_loss = True  # ring exchange: per-device memory independent of B

  # CLIP only random-square-crops its images: no colour augmentations.
  config.augment.crop_scale = (0.9, 1.0)
  config.augment.flip_prob = 0.0
  config.augment.jitter_prob = 0.0
  config.augment.grayscale_prob = 0.0
  # open_clip's image transforms: OpenAI CLIP's mean / std; evaluation resizes the shorter side
  # to 224 and centre-crops it (the whole square, not the preset's 256 -> 224).
  config.augment.normalize = "clip"
  config.eval.crop_fraction = 1.0

  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 5e-4
  config.optimizer.lr_scaling = "none"
  config.optimizer.b2 = 0.98
  config.optimizer.eps = 1e-6  # open_clip get_default_params: 1e-6 for ViT towers
  config.optimizer.weight_decay = 0.2
  config.optimizer.warmup_epochs = 2000 / STEPS_PER_EPOCH  # 2,000 steps
  config.eval.at_end = False
  config.eval.batch_size = 4096
  config.checkpoint_every_steps = 2000
  # Unlike the preset: a log line every 50 steps, with baselines (when evaluated).
  config.log_every_steps = 50
  config.eval.baselines = True
  return config
