r"""SimSiam ResNet-50 on ImageNet-1k, the paper's 100-epoch recipe (Chen & He 2021, sec. 3).

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/simsiam_tpu.py`):
  python -m sslax.main --config configs/simsiam_tpu.py --workdir gs://BUCKET/simsiam_r50

Data: TFDS `imagenet2012`, prepared once with the manual-download archives
in ArrayRecord format so it is read by random access (O(1) exact resume, per-example indices):
`tfds build imagenet2012 --manual_dir=... --file_format=array_record`, then
`--config.dataset.data_dir=gs://BUCKET/tfds`. (TFDS's default TFRecord format can only be
streamed, resumes by skipping everything read before, and is warned about at start; convert it
with `python -m sslax.data.shards --from tfds --input imagenet2012 ...` if it is already built.)

Recipe: 100 epochs at batch 512; SGD (lr = 0.05 x B/256 = 0.1, momentum 0.9, weight decay
1e-4 on every parameter as main_simsiam.py's torch.optim.SGD), cosine decay, no warmup, the
predictor at the constant lr 0.1 (the reference's --fix-pred-lr, `simsiam.fix_pred_lr`);
projector 3 x 2048 with BN on the output; predictor 2048 -> 512 -> 2048; MoCo v2 augmentations
(crop 0.2-1, colour jitter 0.4/0.4/0.4/0.1 with p=0.8, grayscale 0.2, blur p=0.5, flip, ImageNet
mean / std input normalisation); global BatchNorm; bfloat16 compute.

Expected runtime: not measured by us.
Expected accuracy (published, SimSiam paper table 4): linear evaluation top-1 68.1% after
100 epochs (70.0% at 200, 70.8% at 400, 71.3% at 800). Protocol (facebookresearch/simsiam
`main_lincls.py --lars`, with which its README reports the 68.1%): a linear head on the frozen
backbone, random resized crops + flips, 90 epochs at batch 4096, LARS (trust coefficient 0.001)
over SGD momentum 0.9, lr 0.1 x B/256, weight decay 0, cosine. sslax: `python -m sslax.main
--config configs/linear_eval.py:gs://BUCKET/simsiam_r50 --workdir gs://BUCKET/simsiam_r50_linear
--config.batch_size=4096 --config.optimizer.name=lars` (without these: plain momentum SGD at
batch 1024). The end-of-run kNN (k=20, 200) and fast linear probe (frozen centre-crop features,
AdamW) are quick checks, not this protocol.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("simsiam")  # the simsiam defaults are the paper's; 100 epochs
  config.batch_size = 512
  config.augment.crop_scale = (0.2, 1.0)
  config.augment.jitter_strength = 0.5
  config.augment.normalize = "imagenet"  # main_simsiam.py: Normalize(ImageNet mean, std)
  config.augment.blur_prob = 0.5
  config.optimizer.name = "sgd"
  config.optimizer.base_lr = 0.05
  config.optimizer.warmup_epochs = 0.0
  config.optimizer.weight_decay = 1e-4
  config.optimizer.exclude_bias_and_norm = False  # SGD(model.parameters(), weight_decay=...)
  return config
