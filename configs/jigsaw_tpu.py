r"""Jigsaw ResNet-50 on ImageNet-1k (Noroozi & Favaro 2016, "Unsupervised Learning of Visual
Representations by Solving Jigsaw Puzzles", ECCV).

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/jigsaw_tpu.py`):
  python -m sslax.main --config configs/jigsaw_tpu.py --workdir gs://BUCKET/jigsaw_r50

Data: TFDS `imagenet2012` (see configs/simclr_tpu.py for preparing it).

Recipe (paper): a 225 x 225 crop cut into 3 x 3 cells of 75 px, a random 64 x 64 tile in
each (gaps and jitter), tiles normalised one by one, 1000 permutations of maximal Hamming
distance, siamese AlexNet ("context-free network", shared weights per tile) -> concatenation
-> fc7 4096 -> fc8 1000; batch 256, SGD lr 0.01, 350k iterations. Here: dataset.image_size 225,
tile_size 64, 1000 permutations chosen greedily max-min (seed 0); ResNet-50 as the tile encoder
(as in Goyal et al. 2019, "Scaling and Benchmarking Self-Supervised Visual Representation
Learning"), batch 1024, SGD with warmup + cosine, 90 epochs. Evaluation embeds whole 225 px
images, at the tiles' pixel scale.

Expected runtime: not measured by us (9 tiles of 64 px ~ 0.73x a 224 px image per example).
Expected accuracy (published, not ours; quoted from memory of the papers' tables, check the
exact figures there before citing): Jigsaw AlexNet, linear classifiers on frozen layers of
ImageNet, best layer about 35% top-1 (as tabulated by Zhang et al. 2017, "Split-Brain
Autoencoders"); ResNet-50 trained on ImageNet-1k, best-layer linear top-1 in the mid 40s%
(Goyal et al. 2019). Protocol: linear classifiers on frozen, spatially pooled layers (AlexNet
conv1-conv5; Goyal et al.: ResNet-50 stages; exact settings: not checked): not comparable with
sslax's protocols, which read the final pooled features. sslax: `python -m sslax.main --config
configs/linear_eval.py:gs://BUCKET/jigsaw_r50 --workdir gs://BUCKET/jigsaw_r50_linear` (MoCo
v3's linear recipe on whole 225 px images); the end-of-run kNN and fast linear probe (frozen
centre-crop features, AdamW) are quick checks.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("jigsaw")
  config.dataset.image_size = 225
  config.batch_size = 1024
  config.total_epochs = 90.0
  config.augment.crop_scale = (0.3, 1.0)
  config.augment.jitter_prob = 0.0
  config.augment.grayscale_prob = 0.3  # the paper: grey images 30% of the time
  config.jigsaw.tile_size = 64
  config.jigsaw.num_permutations = 1000
  config.jigsaw.head_hidden_dim = 4096
  config.optimizer.name = "sgd"
  config.optimizer.base_lr = 0.1
  config.optimizer.warmup_epochs = 5.0
  config.optimizer.weight_decay = 1e-4
  return config
