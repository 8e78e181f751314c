r"""BYOL ResNet-50 on ImageNet-1k, the paper's recipe (Grill et al. 2020, sec. 3.3, app. B).

Command (Cloud TPU pod slice, one process per host):
  python -m sslax.main --config configs/byol_tpu.py --workdir gs://BUCKET/byol_r50

Data: TFDS `imagenet2012`, prepared once with the manual-download archives
(`tfds build imagenet2012 --manual_dir=...`), then `--config.dataset.data_dir=gs://BUCKET/tfds`.

Recipe: 1000 epochs at batch 4096; LARS (lr = 0.2 x B/256 = 3.2, momentum 0.9, weight decay
1.5e-6, both excluded from biases and BN), 10 warmup epochs then cosine; projector
2048 -> 4096 -> 256 and predictor 256 -> 4096 -> 256 (Linear-BN-ReLU-Linear); target EMA
momentum from 0.996 to 1 (cosine over the run; K = total_epochs x steps per epoch, computed as
the trainer does); asymmetric views (blur 1.0 / 0.1, solarize 0.0 / 0.2); global BatchNorm;
bfloat16 compute.
Differences from the paper: colour jitter is SimCLR's at strength 0.5 (brightness, contrast
and saturation 0.4, hue 0.1) where BYOL uses saturation 0.2.

Expected runtime: the paper reports ~8 h for the 1000 epochs on 512 TPU v3 cores; not measured
by us.
Expected accuracy (published, BYOL paper table 1): linear evaluation top-1 74.3% after 1000
epochs (ResNet-50). Shorter runs as reproduced in SimSiam's table 4: 66.5% at 100 epochs,
70.6% at 200, 73.2% at 400. Our own end-of-training evaluation is kNN (k=20, 200) and a
linear probe on frozen features.
"""

from sslax.presets import imagenet_tpu


def get_config():
  config = imagenet_tpu("byol")  # the byol defaults are the paper's heads and momentum
  config.batch_size = 4096
  config.total_epochs = 1000.0
  config.augment.jitter_strength = 0.5
  config.optimizer.base_lr = 0.2
  config.optimizer.weight_decay = 1.5e-6
  return config
