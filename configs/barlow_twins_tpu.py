r"""Barlow Twins ResNet-50 on ImageNet-1k, the paper's recipe (Zbontar et al. 2021).

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/barlow_twins_tpu.py`):
  python -m sslax.main --config configs/barlow_twins_tpu.py --workdir gs://BUCKET/barlow_twins_r50

Data: TFDS `imagenet2012`, prepared once with the manual-download archives
in ArrayRecord format so it is read by random access (O(1) exact resume, per-example indices):
`tfds build imagenet2012 --manual_dir=... --file_format=array_record`, then
`--config.dataset.data_dir=gs://BUCKET/tfds`. (TFDS's default TFRecord format can only be
streamed, resumes by skipping everything read before, and is warned about at start; convert it
with `python -m sslax.data.shards --from tfds --input imagenet2012 ...` if it is already built.)

Recipe: 1000 epochs at batch 2048; LARS (lr = 0.2 x B/256 = 1.6 for the weights and
0.0048 x B/256 = 0.0384 for biases and BN parameters, `optimizer.bias_lr_ratio` = 0.0048 / 0.2,
as facebookresearch/barlowtwins main.py; momentum 0.9, weight decay 1.5e-6, weight decay and
LARS adaptation excluded from biases and BN), 10 warmup epochs then cosine to
1/1000 of the peak; projector 3 x 8192 (Linear-BN-ReLU, Linear-BN-ReLU, Linear); lambda =
5e-3; BYOL's asymmetric views (blur 1.0 / 0.1, solarize 0.0 / 0.2) with colour jitter
0.4 / 0.4 / 0.2 / 0.1 and ImageNet mean / std input normalisation (main.py's Transform);
per-dimension standardisation and the 8192 x 8192 cross-correlation over the global batch;
bfloat16 compute.

Expected runtime: not measured by us.
Expected accuracy (published, Barlow Twins paper table 1): linear evaluation top-1 73.2% after
1000 epochs (ResNet-50). Protocol (facebookresearch/barlowtwins `evaluate.py --lr-classifier
0.3`, the README's linear command): a linear head on the frozen backbone, random resized crops +
flips, 100 epochs at batch 256, SGD momentum 0.9, lr 0.3, weight decay 1e-6, cosine. sslax:
`python -m sslax.main --config configs/linear_eval.py:gs://BUCKET/barlow_twins_r50 --workdir
gs://BUCKET/barlow_twins_r50_linear --config.batch_size=256 --config.total_epochs=100
--config.optimizer.base_lr=0.3 --config.optimizer.weight_decay=1e-6` (without these: 90 epochs
at batch 1024, lr 0.1 x B/256, weight decay 0). The end-of-run kNN (k=20, 200) and fast linear
probe (frozen centre-crop features, AdamW) are quick checks, not this protocol.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("barlow_twins")  # the barlow_twins defaults are the paper's
  config.batch_size = 2048
  config.total_epochs = 1000.0
  # main.py Transform: ColorJitter(brightness, contrast, saturation, hue) = (0.4, 0.4, 0.2, 0.1).
  config.augment.brightness = 0.4
  config.augment.contrast = 0.4
  config.augment.saturation = 0.2
  config.augment.hue = 0.1
  config.augment.normalize = "imagenet"  # main.py Transform: Normalize(ImageNet mean, std)
  config.optimizer.base_lr = 0.2
  config.optimizer.bias_lr_ratio = 0.0048 / 0.2  # main.py --learning-rate-biases / -weights
  config.optimizer.end_lr = 0.2 * 2048 / 256 * 1e-3  # peak / 1000; recompute if batch_size changes
  config.optimizer.weight_decay = 1.5e-6
  return config
