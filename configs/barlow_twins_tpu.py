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

from sslax.presets import imagenet_tpu


def get_config():
  config = imagenet_tpu("barlow_twins")  # the barlow_twins defaults are the paper's
  config.batch_size = 2048
  config.total_epochs = 1000.0
  config.augment.jitter_strength = 0.5
  config.optimizer.base_lr = 0.2
  config.optimizer.end_lr = 0.2 * 2048 / 256 * 1e-3  # peak / 1000; recompute if batch_size changes
  config.optimizer.weight_decay = 1.5e-6
  return config
