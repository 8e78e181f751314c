r"""Context encoder (Pathak et al. 2016) with a ResNet-50 encoder on ImageNet-1k.

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/inpainting_tpu.py`):
  python -m sslax.main --config configs/inpainting_tpu.py --workdir gs://BUCKET/inpainting_r50

Data: TFDS `imagenet2012` in ArrayRecord format (see configs/simclr_tpu.py for preparing it),
`--config.dataset.data_dir=gs://BUCKET/tfds`.

The paper's recipe where it carries over: 128 px images, the central 64x64 square hidden
(mask_fraction 0.5), L2 reconstruction loss; Adam (the paper: lr 2e-4 for the L2-only model,
trained on ImageNet / Paris StreetView). The paper's adversarial loss (weight 0.999 joint
with L2 0.001) is not implemented: its feature-learning results use the L2 context encoder
for ImageNet-pretrained AlexNet features as well; random-region masks are approximated by
`mask="random_blocks"`.
Differences: ResNet-50 (imagenet stem, stride-32 map at 128 px = 4x4, as the paper's 4x4
bottleneck) + our convolutional upsampling decoder in place of the channel-wise fully
connected layer and up-convolutions.

Expected runtime: not measured by us.
Expected accuracy (published; not reproduced): the paper's AlexNet encoder (random-region
masks), PASCAL VOC 2007 classification 56.5% mAP (fine-tuned), detection 44.5% mAP
(Fast R-CNN), segmentation 29.7% mIU (FCN); linear classifiers on frozen ImageNet features
(conv1..conv5, as tabulated in DeepCluster's table 2): 14.1 / 20.7 / 21.0 / 19.8 / 15.5% top-1.
Protocol: VOC fine-tuning, and a linear classifier on each frozen, spatially pooled AlexNet conv
layer (~9k features; the cited runs' exact settings: not checked): not comparable with sslax's
protocols, which read a ResNet-50's final pooled features. sslax: `python -m sslax.main --config
configs/linear_eval.py:gs://BUCKET/inpainting_r50 --workdir gs://BUCKET/inpainting_r50_linear`
(MoCo v3's linear recipe); the end-of-run kNN and fast linear probe (frozen centre-crop
features, AdamW) are quick checks.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("inpainting")  # the defaults: center mask of half the side, fill 0.5
  config.dataset.image_size = 128
  config.batch_size = 1024
  config.inpainting.decoder_upsamples = 5  # stride 32 -> full resolution
  config.inpainting.decoder_width = 512
  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 2e-4
  config.optimizer.weight_decay = 1e-4
  config.optimizer.warmup_epochs = 2.0
  config.checkpoint_every_steps = 2000
  # Unlike the preset: a log line every 50 steps, eval batches of 512, with baselines.
  config.log_every_steps = 50
  config.eval.batch_size = 512
  config.eval.baselines = True
  return config
