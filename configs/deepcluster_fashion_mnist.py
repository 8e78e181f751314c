r"""DeepCluster on Fashion-MNIST: a CPU demo with the SimCLR demo's network.

Command:
  python -m sslax.main --config configs/deepcluster_fashion_mnist.py --workdir runs/deepcluster_fashion_mnist

Each epoch (234 steps of batch 256) starts with k-means (100 clusters, PCA to 64 whitened
dims) on the features of all 60k training images; the classifier is re-initialised and
trained on the cluster ids with per-example weights 1 / cluster size.

Runtime and accuracy: see benchmarks/results/learning.md, row "deepcluster" (300 steps of
this config, batch 256, on the shared 2-core CPU machine); the full run is not measured.
"""

from sslax.config import base_config


def get_config():
  config = base_config()
  config.method = "deepcluster"
  config.dataset.name = "fashion_mnist"
  config.dataset.image_size = 28
  config.batch_size = 256
  config.total_steps = 900  # ~3.8 epochs: 4 clusterings

  config.model.depth = 10  # the SimCLR demo's backbone
  config.model.width = 0.25
  config.model.stem = "small"

  # 10 true classes; over-segmentation helps (the paper: 10k clusters for 1k ImageNet classes).
  config.deepcluster.num_clusters = 100
  config.deepcluster.pca_dims = 64  # of the 128-d features
  config.deepcluster.kmeans_iters = 20

  # The paper: random resized crops and flips only.
  config.augment.crop_scale = (0.2, 1.0)
  config.augment.jitter_prob = 0.0
  config.augment.grayscale_prob = 0.0

  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 2e-3
  config.optimizer.lr_scaling = "none"
  config.optimizer.weight_decay = 1e-4
  config.optimizer.warmup_epochs = 0.5

  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  return config
