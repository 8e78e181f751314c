r"""DeepCluster on Fashion-MNIST: a CPU demo with the SimCLR demo's network.

Command:
  python -m sslax.main --config configs/deepcluster_fashion_mnist.py --workdir runs/deepcluster_fashion_mnist

Each epoch (234 steps of batch 256) starts with k-means (100 clusters, PCA to 64 whitened
dims) on the features of all 60k training images; the classifier is re-initialised and
trained on the cluster ids with per-example weights 1 / cluster size.

Runtime and accuracy: see benchmarks/results/learning.md, row "deepcluster" (300 steps of
this config, batch 256, on the shared 2-core CPU machine); the full run is not measured.
"""

from sslax.presets import fashion_mnist_cpu


def get_config():
  config = fashion_mnist_cpu("deepcluster")  # 900 steps: 4 clusterings
  # 10 true classes; over-segmentation helps (the paper: 10k clusters for 1k ImageNet classes).
  config.deepcluster.num_clusters = 100
  config.deepcluster.pca_dims = 64  # of the 128-d features
  # The paper: random resized crops and flips only.
  config.augment.crop_scale = (0.2, 1.0)
  config.augment.jitter_prob = 0.0
  config.augment.grayscale_prob = 0.0
  return config
