r"""Colorization (Zhang, Isola & Efros 2016) with a ResNet-50 on ImageNet-1k.

Command (Cloud TPU pod slice, one process per host):
  python -m sslax.main --config configs/colorization_tpu.py --workdir gs://BUCKET/colorization_r50

Data: TFDS `imagenet2012` (prepared once with `tfds build imagenet2012 --manual_dir=...`),
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
"""

from sslax.config import base_config


def get_config():
  config = base_config()
  config.method = "colorization"
  config.dataset.name = "imagenet2012"
  config.dataset.train_split = "train"
  config.dataset.test_split = "validation"
  config.dataset.image_size = 224
  config.batch_size = 1024
  config.total_epochs = 40.0
  config.dtype = "bfloat16"

  config.model.name = "resnet"
  config.model.depth = 50
  config.model.stem = "imagenet"

  config.colorization.grid = 10.0
  config.colorization.soft_encoding = True
  config.colorization.num_neighbours = 5
  config.colorization.sigma = 5.0
  config.colorization.rebalance = True
  config.colorization.rebalance_lambda = 0.5
  config.colorization.prior_num_examples = 100000
  config.colorization.target_stride = 4  # 56x56 predictions
  config.colorization.decoder_upsamples = 3  # stride 32 -> 4
  config.colorization.decoder_width = 256
  config.colorization.crop_scale = (0.2, 1.0)

  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 3e-4
  config.optimizer.lr_scaling = "linear"
  config.optimizer.weight_decay = 1e-3
  config.optimizer.warmup_epochs = 2.0
  config.checkpoint_every_steps = 2000
  return config
