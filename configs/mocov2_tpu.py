r"""MoCo v2 ResNet-50 on ImageNet-1k, the paper's 200-epoch recipe (Chen et al. 2020,
"Improved Baselines with Momentum Contrastive Learning", table 1-2).

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/mocov2_tpu.py`):
  python -m sslax.main --config configs/mocov2_tpu.py --workdir gs://BUCKET/mocov2_r50

Data: TFDS `imagenet2012`, prepared once with the manual-download archives
in ArrayRecord format so it is read by random access (O(1) exact resume, per-example indices):
`tfds build imagenet2012 --manual_dir=... --file_format=array_record`, then
`--config.dataset.data_dir=gs://BUCKET/tfds`. (TFDS's default TFRecord format can only be
streamed, resumes by skipping everything read before, and is warned about at start; convert it
with `python -m sslax.data.shards --from tfds --input imagenet2012 ...` if it is already built.)

Recipe (the paper's): batch 256, SGD (lr 0.03, momentum 0.9, weight decay 1e-4), cosine
schedule without warmup, 200 epochs; temperature 0.2, queue K = 65536, key encoder momentum
0.999, MLP head 2048 -> 128 without BN; "aug+": crop scale 0.2-1, colour jitter
0.4/0.4/0.4/0.1 (strength 0.5) p=0.8, grayscale 0.2, Gaussian blur p=0.5, ImageNet mean / std
input normalisation (main_moco.py). Shuffling BN over 8
groups of 32 images, the paper's 8-GPU setting (see sslax/methods/mocov2.py for why global BN
is not enough with a queue). Weight decay applies to every parameter, biases and BN included,
as main_moco.py's torch.optim.SGD(model.parameters(), ...) (`optimizer.exclude_bias_and_norm
=False`). Differences: bfloat16 compute.

Expected runtime: not measured by us (paper: 200 epochs in ~53 hours on 8 V100 GPUs).
Expected accuracy (published, MoCo v2 paper table 2): ImageNet linear evaluation top-1 67.5%
after 200 epochs (71.1% after 800 epochs, `--config.total_epochs=800`). Protocol
(facebookresearch/moco `main_lincls.py`, with which its README reports the 67.5%): a linear head
on the frozen query encoder, random resized crops + flips, 100 epochs at batch 256, SGD momentum
0.9, lr 30 (x0.1 at epochs 60 and 80), weight decay 0. sslax: `python -m sslax.main --config
configs/linear_eval.py:gs://BUCKET/mocov2_r50 --workdir gs://BUCKET/mocov2_r50_linear
--config.batch_size=256 --config.total_epochs=100 --config.optimizer.base_lr=30
--config.optimizer.lr_decay_epochs='(60,80)'` (without these: MoCo v3's 90 epochs at batch
1024, lr 0.1 x B/256, cosine). The end-of-run kNN (k=20, 200) and fast linear probe (frozen
centre-crop features, AdamW) are quick checks, not this protocol.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("mocov2")  # the mocov2 defaults are the paper's; batch 256
  config.total_epochs = 200.0
  config.augment.crop_scale = (0.2, 1.0)
  config.augment.jitter_strength = 0.5
  config.augment.normalize = "imagenet"  # main_moco.py: Normalize(ImageNet mean, std)
  config.augment.blur_prob = 0.5
  config.optimizer.name = "sgd"
  config.optimizer.base_lr = 0.03  # at batch 256, as in the paper
  config.optimizer.warmup_epochs = 0.0
  config.optimizer.weight_decay = 1e-4
  config.optimizer.exclude_bias_and_norm = False  # SGD(model.parameters(), weight_decay=...)
  config.checkpoint_every_steps = 5000
  return config
