r"""DeepCluster (Caron et al. 2018) with a ResNet-50 on ImageNet-1k.

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/deepcluster_tpu.py`):
  python -m sslax.main --config configs/deepcluster_tpu.py --workdir gs://BUCKET/deepcluster_r50 \
    --config.dataset.data_dir=/data/imagenet

Data: DeepCluster looks pseudo-labels up by example index, so it needs a random-access
source: ImageNet as an image folder (`/data/imagenet/{train,val}/<wnid>/*.JPEG`), record shards
(`python -m sslax.data.shards`, dataset.name="shards") or TFDS prepared in ArrayRecord format,
not a streamed TFRecord TFDS copy (refused with a clear error).

The paper's recipe: k = 10,000 clusters, features PCA-reduced to 256 dims, whitened and
L2-normalised, k-means every epoch, classifier re-initialised every epoch, uniform sampling
over clusters (here: the equivalent per-example weights), SGD momentum 0.9, lr 0.05, weight
decay 1e-5, batch 256, random resized crops and flips, 500 epochs (AlexNet).
Differences: ResNet-50 and no Sobel filtering (the paper's AlexNet ran on Sobel-filtered
grey images; its VGG-16 variant too).

Expected runtime: the paper reports 12 days on a Pascal P100 for AlexNet's 500 epochs (k-means
about a third of the time); not measured by us.
Expected accuracy (published; not reproduced): AlexNet, linear classifiers on frozen ImageNet
features conv1..conv5: 12.9 / 29.2 / 38.2 / 39.8 / 36.1% top-1 (paper table 2); PASCAL VOC
2007 classification 73.7% mAP (fine-tuned), detection 65.9% mAP, segmentation 45.1% mIU
(paper table 3). The paper reports no ResNet-50 numbers.
Protocol (facebookresearch/deepcluster `eval_linear.py`): a linear classifier on each frozen
AlexNet conv layer, average-pooled to ~9k features, random 224 crops + flips, 90 epochs at batch
256, SGD momentum 0.9, lr 0.01, 10-crop test; not comparable with sslax's protocols, which read
a ResNet-50's final pooled features. sslax: `python -m sslax.main --config
configs/linear_eval.py:gs://BUCKET/deepcluster_r50 --workdir gs://BUCKET/deepcluster_r50_linear`
(MoCo v3's linear recipe); the end-of-run kNN and fast linear probe (frozen centre-crop
features, AdamW) are quick checks.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("deepcluster")  # the deepcluster defaults: 10k clusters, PCA to 256
  config.dataset.name = "image_folder"
  config.dataset.data_dir = "/data/imagenet"
  config.dataset.test_split = "val"
  config.total_epochs = 500.0
  config.augment.jitter_prob = 0.0
  config.augment.grayscale_prob = 0.0
  config.optimizer.name = "sgd"
  config.optimizer.base_lr = 0.05
  config.optimizer.lr_scaling = "none"
  config.optimizer.weight_decay = 1e-5
  config.optimizer.warmup_epochs = 0.0
  config.checkpoint_every_steps = 5000
  # Unlike the preset: a log line every 50 steps, with baselines.
  config.log_every_steps = 50
  config.eval.baselines = True
  return config
