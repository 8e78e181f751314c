r"""RotNet ResNet-50 on ImageNet-1k (Gidaris et al. 2018, "Unsupervised Representation Learning
by Predicting Image Rotations", ICLR).

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/rotnet_tpu.py`):
  python -m sslax.main --config configs/rotnet_tpu.py --workdir gs://BUCKET/rotnet_r50

Data: TFDS `imagenet2012` (see configs/simclr_tpu.py for preparing it).

Recipe: the paper trains AlexNet / NIN on ImageNet with all four rotations of every image in
the batch (batch 192 images -> 768 rotated inputs), SGD with Nesterov momentum 0.9, weight
decay 5e-4, lr 0.1 dropped x5 at epochs 10, 20, 25 of 30 (AlexNet), random crops and flips.
Here: ResNet-50 (Kolesnikov et al. 2019, "Revisiting Self-Supervised Visual Representation
Learning", study rotation with ResNets; our schedule is our choice, not theirs), 4 rotations,
batch 1024 images (4096 inputs), SGD with warmup + cosine instead of steps, 35 epochs, a
linear rotation classifier on the pooled features.

Expected runtime: not measured by us (about 4x a SimCLR epoch's backbone cost per image).
Expected accuracy (published, not ours; quoted from memory of the papers' tables, check the
exact figures there before citing): RotNet AlexNet, linear classifiers on frozen conv layers
of ImageNet, best layer (conv3) about 38.7% top-1 (Gidaris et al. 2018, ImageNet linear
table). No ResNet-50 number from the paper itself. Protocol: a linear classifier on each
frozen, spatially pooled AlexNet conv layer (exact settings: not checked): not comparable with
sslax's protocols, which read a ResNet-50's final pooled features. sslax: `python -m sslax.main
--config configs/linear_eval.py:gs://BUCKET/rotnet_r50 --workdir gs://BUCKET/rotnet_r50_linear`
(MoCo v3's linear recipe); the end-of-run kNN and fast linear probe (frozen centre-crop
features, AdamW) are quick checks.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("rotnet")  # all 4 rotations (the default)
  config.batch_size = 1024
  config.total_epochs = 35.0
  config.augment.jitter_prob = 0.0
  config.augment.grayscale_prob = 0.0
  config.rotnet.head_layers = 1
  config.optimizer.name = "sgd"
  config.optimizer.base_lr = 0.1
  config.optimizer.warmup_epochs = 2.0
  config.optimizer.weight_decay = 1e-4
  return config
