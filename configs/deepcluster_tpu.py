r"""DeepCluster (Caron et al. 2018) with a ResNet-50 on ImageNet-1k.

Command (Cloud TPU pod slice or GPU node; one process per host):
  python -m sslax.main --config configs/deepcluster_tpu.py --workdir gs://BUCKET/deepcluster_r50 \
    --config.dataset.data_dir=/data/imagenet

Data: DeepCluster looks pseudo-labels up by example index, so it needs a random-access
source: ImageNet as an image folder (`/data/imagenet/{train,val}/<wnid>/*.JPEG`), not the
streamed TFDS copy (refused with a clear error).

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
"""

from sslax.config import base_config


def get_config():
  config = base_config()
  config.method = "deepcluster"
  config.dataset.name = "image_folder"
  config.dataset.data_dir = "/data/imagenet"
  config.dataset.train_split = "train"
  config.dataset.test_split = "val"
  config.dataset.image_size = 224
  config.batch_size = 256
  config.total_epochs = 500.0
  config.dtype = "bfloat16"

  config.model.name = "resnet"
  config.model.depth = 50
  config.model.stem = "imagenet"

  config.deepcluster.num_clusters = 10000
  config.deepcluster.pca_dims = 256
  config.deepcluster.kmeans_iters = 20
  config.deepcluster.uniform_sampling = True
  config.deepcluster.reset_classifier = True

  config.augment.crop_scale = (0.08, 1.0)
  config.augment.flip_prob = 0.5
  config.augment.jitter_prob = 0.0
  config.augment.grayscale_prob = 0.0

  config.optimizer.name = "sgd"
  config.optimizer.base_lr = 0.05
  config.optimizer.lr_scaling = "none"
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-5
  config.optimizer.warmup_epochs = 0.0
  config.eval.batch_size = 1024
  config.checkpoint_every_steps = 5000
  return config
