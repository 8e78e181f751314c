r"""Colorization (Zhang, Isola & Efros 2016) with a ResNet-50 on ImageNet-1k.

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/colorization_tpu.py`):
  python -m sslax.main --config configs/colorization_tpu.py --workdir gs://BUCKET/colorization_r50

Data: TFDS `imagenet2012` in ArrayRecord format (see configs/simclr_tpu.py for preparing it),
`--config.dataset.data_dir=gs://BUCKET/tfds`.

The paper's recipe where it carries over: L channel in; ab quantised on a 10-unit grid (our
in-gamut count is 261 bins, the paper's list has 313), soft encoding with the 5 nearest bins
(sigma 5), class rebalancing with lambda 0.5 and prior smoothing sigma 5, predictions at 1/4
resolution (56x56 for 224 px), Adam (the paper: lr 3e-5, beta 0.9/0.99, weight decay 1e-3,
~450k iterations of batch 40 with a VGG-style network; we train a ResNet-50 for 40 epochs at
batch 1024 with AdamW and the linear lr scaling below).
Differences: ResNet-50 encoder (imagenet stem, stride-32 map) + our upsampling decoder (3
upsamplings to stride 4) instead of the paper's dilated VGG network; no annealed-mean
decoding (only needed to render colour images, not for features).

Expected runtime: not measured by us.
Expected accuracy (published; not reproduced): the paper's AlexNet-style encoder, linear
classifiers on frozen ImageNet features (conv1..conv5, as tabulated in DeepCluster's table 2
and the split-brain paper): 12.5 / 24.5 / 30.4 / 31.5 / 30.3% top-1; PASCAL VOC 2007
classification 65.9% mAP (fine-tuned), detection 46.9% mAP, segmentation 35.6% mIU.
The paper reports no ResNet-50 numbers.
Protocol: a linear classifier on each frozen, spatially pooled AlexNet conv layer (~9k features;
DeepCluster's eval_linear.py is one such code: 90 epochs of SGD, 10-crop test; the cited runs'
exact settings: not checked) and VOC fine-tuning: not comparable with sslax's protocols, which
read a ResNet-50's final pooled features. sslax's `configs/linear_eval.py` does not take
colorization runs (the encoder reads the L channel only); the end-of-run kNN and fast linear
probe (frozen centre-crop features, AdamW) are sslax's own quick checks.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("colorization")  # 56x56 predictions: target_stride 4 (the default)
  config.batch_size = 1024
  config.total_epochs = 40.0
  config.colorization.prior_num_examples = 100000
  config.colorization.decoder_upsamples = 3  # stride 32 -> 4
  config.colorization.decoder_width = 256
  config.colorization.crop_scale = (0.2, 1.0)
  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 3e-4
  config.optimizer.weight_decay = 1e-3
  config.optimizer.warmup_epochs = 2.0
  config.checkpoint_every_steps = 2000
  # Unlike the preset: a log line every 50 steps, eval batches of 512, with baselines.
  config.log_every_steps = 50
  config.eval.batch_size = 512
  config.eval.baselines = True
  return config
