r"""SwAV ResNet-50 on ImageNet-1k with multi-crop 2x224 + 6x96, the reference 400-epoch recipe
(Caron et al. 2020; facebookresearch/swav scripts/swav_400ep_pretrain.sh).

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/swav_tpu.py`):
  python -m sslax.main --config configs/swav_tpu.py --workdir gs://BUCKET/swav_r50

Data: TFDS `imagenet2012`, prepared once with the manual-download archives
in ArrayRecord format so it is read by random access (O(1) exact resume, per-example indices):
`tfds build imagenet2012 --manual_dir=... --file_format=array_record`, then
`--config.dataset.data_dir=gs://BUCKET/tfds`. (TFDS's default TFRecord format can only be
streamed, resumes by skipping everything read before, and is warned about at start; convert it
with `python -m sslax.data.shards --from tfds --input imagenet2012 ...` if it is already built.)

Recipe (the reference's): batch 4096, SGD + LARC as main_swav.py (lr 0.3 x B/256 = 4.8, final
lr 0.0048, momentum 0.9, weight decay 1e-6 and trust coefficient 1e-3 on every parameter,
biases and BN included: `optimizer.exclude_bias_and_norm=False`), 10 warmup epochs from lr 0.3
(the script's --start_warmup) then cosine, 400 epochs; crops 2 x 224 (scale
0.14-1) + 6 x 96 (scale 0.05-0.14); projection 2048 -> 128 with BN; 3000 prototypes, frozen for
the first 313 iterations (one epoch); Sinkhorn-Knopp 3 iterations, epsilon 0.05; temperature
0.1; no queue at this batch size; colour jitter strength 1.0 p=0.8, grayscale 0.2, blur
p=0.5; ImageNet mean / std input normalisation with red std 0.228 as the reference
(`augment.normalize = "swav"`); synchronised (global) BN.
Differences: optax's LARS divides by the norm of the decayed
gradient, ||g + wd p||, where apex's LARC divides by ||g|| + wd ||p|| (equal up to wd ||p|| /
||g||, negligible at wd 1e-6), and applies the lr before momentum; the prototypes are
normalised inside the forward pass instead of in place before each step
(see sslax/methods/swav.py); bfloat16 compute.

Expected runtime: not measured by us (reference: 3 min 40 s per epoch on 64 V100 GPUs).
Expected accuracy (published, facebookresearch/swav model zoo): ImageNet linear evaluation
top-1 74.6% after 400 epochs (72.1% at 100, 73.9% at 200, 75.3% at 800 epochs:
`--config.total_epochs=800`). Protocol (facebookresearch/swav `eval_linear.py` defaults, the
README's 8-GPU command): a linear head on the frozen, average-pooled backbone, random resized
crops + flips, 100 epochs at batch 256 (32 per GPU), SGD momentum 0.9, lr 0.3, weight decay 1e-6,
cosine. sslax: `python -m sslax.main --config configs/linear_eval.py:gs://BUCKET/swav_r50
--workdir gs://BUCKET/swav_r50_linear --config.batch_size=256 --config.total_epochs=100
--config.optimizer.base_lr=0.3 --config.optimizer.weight_decay=1e-6` (without these: 90 epochs
at batch 1024, lr 0.1 x B/256, weight decay 0). The end-of-run kNN (k=20, 200) and fast linear
probe (frozen centre-crop features, AdamW) are quick checks, not this protocol.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("swav")  # the swav defaults are the reference's 2x224 + 6x96 recipe
  config.batch_size = 4096
  config.total_epochs = 400.0
  config.augment.blur_prob = 0.5
  config.augment.normalize = "swav"  # multicropdataset.py: mean (.485, .456, .406), std (.228, ...)
  config.optimizer.end_lr = 0.0048  # LARS lr 0.3 x B/256 = 4.8 at batch 4096
  config.optimizer.warmup_start_lr = 0.3  # scripts/swav_400ep_pretrain.sh --start_warmup
  config.optimizer.exclude_bias_and_norm = False  # LARC wraps SGD over model.parameters()
  config.checkpoint_every_steps = 5000
  return config
