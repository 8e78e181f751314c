r"""VICReg ResNet-50 on ImageNet-1k, the paper's recipe (Bardes et al. 2022).

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/vicreg_tpu.py`):
  python -m sslax.main --config configs/vicreg_tpu.py --workdir gs://BUCKET/vicreg_r50

Data: TFDS `imagenet2012`, prepared once with the manual-download archives
in ArrayRecord format so it is read by random access (O(1) exact resume, per-example indices):
`tfds build imagenet2012 --manual_dir=... --file_format=array_record`, then
`--config.dataset.data_dir=gs://BUCKET/tfds`. (TFDS's default TFRecord format can only be
streamed, resumes by skipping everything read before, and is warned about at start; convert it
with `python -m sslax.data.shards --from tfds --input imagenet2012 ...` if it is already built.)

Recipe: 1000 epochs at batch 2048; LARS (lr = 0.2 x B/256 = 1.6, momentum 0.9, weight decay
1e-6, both excluded from biases and BN), 10 warmup epochs then cosine to 1/1000 of the peak;
expander 3 x 8192 (Linear-BN-ReLU, Linear-BN-ReLU, Linear); coefficients lambda = mu = 25,
nu = 1; variance and covariance over the global batch; BYOL's asymmetric views (blur 1.0 /
0.1, solarize 0.0 / 0.2) with colour jitter 0.4 / 0.4 / 0.2 / 0.1 and ImageNet mean / std
input normalisation (augmentations.py); bfloat16 compute.
The variance term is the authors' code's (main_vicreg.py, behind the 73.2%): the two branches'
hinges averaged, with mu = 25. The paper's eq. (6) sums them (twice the weight), i.e.
--config.vicreg.var_coeff=50 here.

Expected runtime: not measured by us.
Expected accuracy (published, VICReg paper table 1): linear evaluation top-1 73.2% after 1000
epochs (ResNet-50). Protocol (facebookresearch/vicreg `evaluate.py --lr-head 0.02`, the
README's linear command): a linear head on the frozen backbone, random resized crops + flips,
100 epochs at batch 256, SGD momentum 0.9, lr 0.02, weight decay 1e-6, cosine. sslax: `python -m
sslax.main --config configs/linear_eval.py:gs://BUCKET/vicreg_r50 --workdir
gs://BUCKET/vicreg_r50_linear --config.batch_size=256 --config.total_epochs=100
--config.optimizer.base_lr=0.02 --config.optimizer.weight_decay=1e-6` (without these: 90 epochs
at batch 1024, lr 0.1 x B/256, weight decay 0). The end-of-run kNN (k=20, 200) and fast linear
probe (frozen centre-crop features, AdamW) are quick checks, not this protocol.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("vicreg")  # the vicreg defaults are the paper's
  config.batch_size = 2048
  config.total_epochs = 1000.0
  # augmentations.py: ColorJitter(brightness, contrast, saturation, hue) = (0.4, 0.4, 0.2, 0.1).
  config.augment.brightness = 0.4
  config.augment.contrast = 0.4
  config.augment.saturation = 0.2
  config.augment.hue = 0.1
  config.augment.normalize = "imagenet"  # augmentations.py: Normalize(ImageNet mean, std)
  config.optimizer.base_lr = 0.2
  config.optimizer.end_lr = 0.2 * 2048 / 256 * 1e-3  # peak / 1000; recompute if batch_size changes
  return config
