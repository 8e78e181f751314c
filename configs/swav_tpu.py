r"""SwAV ResNet-50 on ImageNet-1k with multi-crop 2x224 + 6x96, the reference 400-epoch recipe
(Caron et al. 2020; facebookresearch/swav scripts/swav_400ep_pretrain.sh).

Command (Cloud TPU pod slice, one process per host):
  python -m sslax.main --config configs/swav_tpu.py --workdir gs://BUCKET/swav_r50

Data: TFDS `imagenet2012`, prepared once with the manual-download archives
(`tfds build imagenet2012 --manual_dir=...`), then `--config.dataset.data_dir=gs://BUCKET/tfds`.

Recipe (the reference's): batch 4096, LARS (lr 0.3 x B/256 = 4.8, final lr 0.0048, momentum
0.9, weight decay 1e-6), 10 warmup epochs then cosine, 400 epochs; crops 2 x 224 (scale
0.14-1) + 6 x 96 (scale 0.05-0.14); projection 2048 -> 128 with BN; 3000 prototypes, frozen for
the first 313 iterations (one epoch); Sinkhorn-Knopp 3 iterations, epsilon 0.05; temperature
0.1; no queue at this batch size; colour jitter strength 1.0 p=0.8, grayscale 0.2, blur
p=0.5; synchronised (global) BN. Differences: our warmup starts at lr 0 (the reference at
0.3); our LARS excludes biases and BN parameters from weight decay and adaptation; the
prototypes are normalised inside the forward pass instead of in place before each step
(see sslax/methods/swav.py); bfloat16 compute.

Expected runtime: not measured by us (reference: 3 min 40 s per epoch on 64 V100 GPUs).
Expected accuracy (published, facebookresearch/swav model zoo): ImageNet linear evaluation
top-1 74.6% after 400 epochs (72.1% at 100, 73.9% at 200, 75.3% at 800 epochs:
`--config.total_epochs=800`). Our own end-of-training evaluation here is kNN (k=20, 200) and a
linear probe on frozen features.
"""

from sslax.presets import imagenet_tpu


def get_config():
  config = imagenet_tpu("swav")  # the swav defaults are the reference's 2x224 + 6x96 recipe
  config.batch_size = 4096
  config.total_epochs = 400.0
  config.augment.blur_prob = 0.5
  config.optimizer.end_lr = 0.0048  # LARS lr 0.3 x B/256 = 4.8 at batch 4096
  config.checkpoint_every_steps = 5000
  return config
