r"""Barlow Twins ResNet-50 on ImageNet-1k, the paper's recipe (Zbontar et al. 2021).

Command (Cloud TPU pod slice, one process per host):
  python -m sslax.main --config configs/barlow_twins_tpu.py --workdir gs://BUCKET/barlow_twins_r50

Data: TFDS `imagenet2012`, prepared once with the manual-download archives
(`tfds build imagenet2012 --manual_dir=...`), then `--config.dataset.data_dir=gs://BUCKET/tfds`.

Recipe: 1000 epochs at batch 2048; LARS (lr = 0.2 x B/256 = 1.6 for the weights, momentum
0.9, weight decay 1.5e-6, both excluded from biases and BN), 10 warmup epochs then cosine to
1/1000 of the peak; projector 3 x 8192 (Linear-BN-ReLU, Linear-BN-ReLU, Linear); lambda =
5e-3; BYOL's asymmetric views (blur 1.0 / 0.1, solarize 0.0 / 0.2); per-dimension
standardisation and the 8192 x 8192 cross-correlation over the global batch; bfloat16 compute.
Differences from the paper: biases and BN parameters get the same lr as the weights (the paper
gives them 0.0048); colour jitter is SimCLR's at strength 0.5 (saturation 0.4 where the paper
uses 0.2).

Expected runtime: not measured by us.
Expected accuracy (published, Barlow Twins paper table 1): linear evaluation top-1 73.2% after
1000 epochs (ResNet-50). Our own end-of-training evaluation is kNN (k=20, 200) and a linear
probe on frozen features.
"""

from sslax.config import base_config


def get_config():
  config = base_config()
  config.method = "barlow_twins"
  config.dataset.name = "imagenet2012"
  config.dataset.train_split = "train"
  config.dataset.test_split = "validation"
  config.dataset.image_size = 224
  config.batch_size = 2048
  config.total_epochs = 1000.0
  config.dtype = "bfloat16"

  config.model.name = "resnet"
  config.model.depth = 50
  config.model.width = 1.0
  config.model.stem = "imagenet"

  config.augment.crop_scale = (0.08, 1.0)
  config.augment.jitter_strength = 0.5
  config.augment.jitter_prob = 0.8
  config.augment.grayscale_prob = 0.2

  config.barlow_twins.proj_hidden_dim = 8192
  config.barlow_twins.proj_dim = 8192
  config.barlow_twins.proj_layers = 3
  config.barlow_twins.lambda_offdiag = 5e-3
  config.barlow_twins.view_blur_prob = (1.0, 0.1)
  config.barlow_twins.view_solarize_prob = (0.0, 0.2)

  config.optimizer.name = "lars"
  config.optimizer.base_lr = 0.2
  config.optimizer.lr_scaling = "linear"
  config.optimizer.warmup_epochs = 10.0
  config.optimizer.end_lr = 0.2 * 2048 / 256 * 1e-3  # peak / 1000; recompute if batch_size changes
  config.optimizer.weight_decay = 1.5e-6
  config.optimizer.momentum = 0.9
  config.optimizer.trust_coefficient = 1e-3

  config.log_every_steps = 100
  config.checkpoint_every_steps = 1000
  config.eval.batch_size = 1024
  config.eval.knn_ks = (20, 200)
  config.eval.baselines = False
  return config
