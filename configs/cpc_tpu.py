r"""CPC v2 (Henaff et al. 2020, "Data-Efficient Image Recognition with Contrastive Predictive
Coding", ICML) with a ResNet-50 patch encoder on ImageNet-1k.

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/cpc_tpu.py`):
  python -m sslax.main --config configs/cpc_tpu.py --workdir gs://BUCKET/cpc_r50

Data: TFDS `imagenet2012` (see configs/simclr_tpu.py for preparing it).

Recipe: 256 px views cut into a 7 x 7 grid of 64 px patches every 32 px (CPC v1's grid), each
patch through ResNet-50 (2048-d, mean-pooled); the appendix's masked context network (5
residual blocks of width 256), target_dim 64, emb_scale 0.1, predictions of the patches 1, 2
and 3 rows below, InfoNCE against all 25,088 patches of the global batch of 512. Evaluation
embeds the 256 px centre crop (resize 293) as the mean over the same grid. Batch size, length
(100 epochs), optimizer (AdamW, lr 2e-4 x B/256, no weight decay, 5 warmup epochs) and the crop
range are chosen here, not taken from the paper; see sslax/methods/cpc.py for what differs from
CPC v2 (BatchNorm instead of layer norm, one prediction direction, no per-patch augmentation).

Expected runtime: not measured by us (49 patches of 64 px per image: ~4x the pixels of a
224 px image). Compiled for v5e:4x4 by `python -m sslax.aot` on the CPU machine (2026-11-30):
peak HBM 5.0 GiB per chip of 16, HBM-bound by the roofline estimate at most 383 img/s per chip;
not run on a TPU.
Expected accuracy (published, not ours): linear classification on ImageNet, CPC v2 with a
ResNet-50 encoder 63.8% top-1 / 85.3% top-5, with its ResNet-161 71.5% / 90.1% (the paper's
table of linear evaluation, as listed by Papers with Code); that ResNet-50 is a ResNet v2 with
layer normalisation, trained with the paper's own recipe. Not reproduced here.
Protocol: the paper's linear classification on frozen encoder features (its exact settings: not
checked; there is no official code). sslax's `configs/linear_eval.py:DIR` accepts a CPC run but
applies the ResNet to whole images, not to CPC's patch grid, so it does not measure this
representation; `python -m sslax.evaluate --workdir gs://BUCKET/cpc_r50 --protocol linear` and
the end-of-run kNN / fast linear probe use the patch-grid mean of frozen centre crops, which is
not the paper's protocol either.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("cpc")  # the cpc defaults: 64 px patches every 32 px, offsets 1-3
  config.dataset.image_size = 256
  config.batch_size = 512
  config.total_epochs = 100.0
  config.augment.crop_scale = (0.3, 1.0)
  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 2e-4
  config.optimizer.weight_decay = 0.0
  config.optimizer.warmup_epochs = 5.0
  return config
