r"""VICReg ResNet-50 on ImageNet-1k, the paper's recipe (Bardes et al. 2022).

Command (Cloud TPU pod slice, one process per host):
  python -m sslax.main --config configs/vicreg_tpu.py --workdir gs://BUCKET/vicreg_r50

Data: TFDS `imagenet2012`, prepared once with the manual-download archives
(`tfds build imagenet2012 --manual_dir=...`), then `--config.dataset.data_dir=gs://BUCKET/tfds`.

Recipe: 1000 epochs at batch 2048; LARS (lr = 0.2 x B/256 = 1.6, momentum 0.9, weight decay
1e-6, both excluded from biases and BN), 10 warmup epochs then cosine to 1/1000 of the peak;
expander 3 x 8192 (Linear-BN-ReLU, Linear-BN-ReLU, Linear); coefficients lambda = mu = 25,
nu = 1; variance and covariance over the global batch; BYOL's asymmetric views (blur 1.0 /
0.1, solarize 0.0 / 0.2); bfloat16 compute.
Differences from the paper: colour jitter is SimCLR's at strength 0.5 (saturation 0.4 where
the paper uses 0.2). The variance term follows the paper's eq. (6) (both branches summed);
the authors' code averages them, i.e. --config.vicreg.var_coeff=12.5 here.

Expected runtime: not measured by us.
Expected accuracy (published, VICReg paper table 1): linear evaluation top-1 73.2% after 1000
epochs (ResNet-50). Our own end-of-training evaluation is kNN (k=20, 200) and a linear probe
on frozen features.
"""

from sslax.presets import imagenet_tpu


def get_config():
  config = imagenet_tpu("vicreg")  # the vicreg defaults are the paper's
  config.batch_size = 2048
  config.total_epochs = 1000.0
  config.augment.jitter_strength = 0.5
  config.optimizer.base_lr = 0.2
  config.optimizer.end_lr = 0.2 * 2048 / 256 * 1e-3  # peak / 1000; recompute if batch_size changes
  return config
