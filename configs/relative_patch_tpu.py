r"""Relative patch position ResNet-50 on ImageNet-1k (Doersch et al. 2015, "Unsupervised Visual
Representation Learning by Context Prediction", ICCV).

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/relative_patch_tpu.py`):
  python -m sslax.main --config configs/relative_patch_tpu.py --workdir gs://BUCKET/relpatch_r50

Data: TFDS `imagenet2012` (see configs/simclr_tpu.py for preparing it).

Recipe (paper): 96 px patches, the centre of a 3 x 3 grid and one of its 8 neighbours, 48 px
gaps plus up to 7 px jitter, chromatic-aberration projection and random patch down-sampling,
AlexNet-style late fusion (fc6 per patch, fc7 and fc8 on the pair). Here: dataset.image_size
= 288 (3 x 3 cells of 96 px; 64 px patches leave 0-64 px gaps), per-patch normalisation, no
chromatic-aberration handling (see sslax/pretext/patches.py), ResNet-50 per patch
batch 1024 images, SGD with warmup +
cosine, 90 epochs. Evaluation embeds whole 288 px images.

Expected runtime: not measured by us (two 64 px patches ~ 0.16x a 224 px image per example).
Expected accuracy (published, not ours; quoted from memory of the papers' tables, check the
exact figures there before citing): context prediction, AlexNet-style network, linear
classifiers on frozen layers of ImageNet, best layer about 30% top-1 (as tabulated by Zhang et
al. 2017, "Split-Brain Autoencoders"). Protocol: a linear classifier on each frozen, spatially
pooled AlexNet layer (exact settings: not checked): not comparable with sslax's protocols, which
read a ResNet-50's final pooled features. sslax: `python -m sslax.main --config
configs/linear_eval.py:gs://BUCKET/relpatch_r50 --workdir gs://BUCKET/relpatch_r50_linear` (MoCo
v3's linear recipe on whole 288 px images); the end-of-run kNN and fast linear probe (frozen
centre-crop features, AdamW) are quick checks.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("relative_patch")
  config.dataset.image_size = 288
  config.batch_size = 1024
  config.total_epochs = 90.0
  config.augment.crop_scale = (0.3, 1.0)
  config.augment.jitter_prob = 0.0
  config.augment.grayscale_prob = 0.0
  config.relative_patch.patch_size = 64
  config.relative_patch.head_hidden_dim = 4096
  config.optimizer.name = "sgd"
  config.optimizer.base_lr = 0.1
  config.optimizer.warmup_epochs = 5.0
  config.optimizer.weight_decay = 1e-4
  return config
