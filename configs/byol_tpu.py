r"""BYOL ResNet-50 on ImageNet-1k, the paper's recipe (Grill et al. 2020, sec. 3.3, app. B).

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/byol_tpu.py`):
  python -m sslax.main --config configs/byol_tpu.py --workdir gs://BUCKET/byol_r50

Data: TFDS `imagenet2012`, prepared once with the manual-download archives
in ArrayRecord format so it is read by random access (O(1) exact resume, per-example indices):
`tfds build imagenet2012 --manual_dir=... --file_format=array_record`, then
`--config.dataset.data_dir=gs://BUCKET/tfds`. (TFDS's default TFRecord format can only be
streamed, resumes by skipping everything read before, and is warned about at start; convert it
with `python -m sslax.data.shards --from tfds --input imagenet2012 ...` if it is already built.)

Recipe: 1000 epochs at batch 4096; LARS (lr = 0.2 x B/256 = 3.2, momentum 0.9, weight decay
1.5e-6, both excluded from biases and BN), 10 warmup epochs then cosine; projector
2048 -> 4096 -> 256 and predictor 256 -> 4096 -> 256 (Linear-BN-ReLU-Linear); target EMA
momentum from 0.996 to 1 (cosine over the run; K = total_epochs x steps per epoch, computed as
the trainer does); asymmetric views (blur 1.0 / 0.1, solarize 0.0 / 0.2); global BatchNorm;
bfloat16 compute.
Colour jitter as BYOL's augmentations.py (brightness 0.4, contrast 0.4, saturation 0.2, hue
0.1, p=0.8, random order); inputs stay in [0, 1], unnormalised, as in BYOL's JAX code.
Differences from the paper: brightness scales by a factor in [0.6, 1.4] and contrast blends
towards the grey mean (torchvision's ColorJitter), where BYOL's code adds a brightness delta in
[-0.4, 0.4] and centres each channel on its own mean.

Expected runtime: the paper reports ~8 h for the 1000 epochs on 512 TPU v3 cores; not measured
by us.
Expected accuracy (published, BYOL paper table 1): linear evaluation top-1 74.3% after 1000
epochs (ResNet-50). Shorter runs as reproduced in SimSiam's table 4: 66.5% at 100 epochs,
70.6% at 200, 73.2% at 400 (SimSiam's reproductions; their linear protocol: not checked).
Protocol (deepmind-research byol `configs/eval.py`, `main_loop.py --experiment_mode=linear-eval`):
a linear head on the frozen online encoder (eval-mode BN), random crops + flips, 80 epochs at the
default batch 4096, SGD with Nesterov momentum 0.9, lr 0.2 x B/256, no weight decay, cosine; the
paper also picks the lr on a validation split (its README). sslax: `python -m sslax.main --config
configs/linear_eval.py:gs://BUCKET/byol_r50 --workdir gs://BUCKET/byol_r50_linear` (90 epochs of
plain momentum SGD at batch 1024, lr 0.1 x B/256; closer with --config.total_epochs=80
--config.batch_size=4096 --config.optimizer.base_lr=0.2). The end-of-run kNN (k=20, 200) and
fast linear probe (frozen centre-crop features, AdamW) are quick checks, not this protocol.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("byol")  # the byol defaults are the paper's heads and momentum
  config.batch_size = 4096
  config.total_epochs = 1000.0
  # augmentations.py: ColorJitter(brightness, contrast, saturation, hue) = (0.4, 0.4, 0.2, 0.1).
  config.augment.brightness = 0.4
  config.augment.contrast = 0.4
  config.augment.saturation = 0.2
  config.augment.hue = 0.1
  config.optimizer.base_lr = 0.2
  config.optimizer.weight_decay = 1.5e-6
  return config
