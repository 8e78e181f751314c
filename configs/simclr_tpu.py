r"""SimCLR ResNet-50 on ImageNet-1k, the paper's 100-epoch recipe (Chen et al. 2020, table B.1).

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/simclr_tpu.py`):
  python -m sslax.main --config configs/simclr_tpu.py --workdir gs://BUCKET/simclr_r50

Data: TFDS `imagenet2012`, prepared once with the manual-download archives
in ArrayRecord format so it is read by random access (O(1) exact resume, per-example indices):
`tfds build imagenet2012 --manual_dir=... --file_format=array_record`, then
`--config.dataset.data_dir=gs://BUCKET/tfds`. (TFDS's default TFRecord format can only be
streamed, resumes by skipping everything read before, and is warned about at start; convert it
with `python -m sslax.data.shards --from tfds --input imagenet2012 ...` if it is already built.)

Recipe: batch 4096, LARS (lr = 0.3 x B/256 = 4.8, momentum 0.9, weight decay 1e-6, excluded
from biases and BN), 10 warmup epochs then cosine, temperature 0.1, 2-layer projection head
(2048 -> 128), colour jitter strength 1.0, blur p=0.5, global (cross-replica) BatchNorm,
bfloat16 compute.

Expected runtime: about 14 h on a v3-32 (paper: 100 epochs in ~1.5 h on 128 TPU v3 cores
for B=4096... scale with cores); not measured by us.
Expected accuracy (published, SimCLR paper fig. B.1 / table B.1): linear evaluation top-1 about
64.5-66.5% after 100 epochs at batch 4096; 69.3% after 1000 epochs. Protocol: the linear-eval
command of google-research/simclr's README (~64.5% for this recipe there): a linear head on the
frozen backbone, random crops + flips, 90 epochs at batch 4096, SGD with Nesterov momentum 0.9,
lr 0.1 x B/256, weight decay 1e-6, cosine (the paper's own linear-eval settings: not checked).
sslax: `python -m sslax.main --config configs/linear_eval.py:gs://BUCKET/simclr_r50 --workdir
gs://BUCKET/simclr_r50_linear` (plain momentum SGD at batch 1024, weight decay 0; closer with
--config.batch_size=4096 --config.optimizer.weight_decay=1e-6). The end-of-run kNN (k=20, 200)
and fast linear probe (frozen centre-crop features, AdamW) are quick checks, not this protocol.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("simclr")  # ResNet-50; LARS lr 0.3 x B/256, 10 warmup epochs, 100 epochs
  config.batch_size = 4096
  config.augment.blur_prob = 0.5
  config.simclr.temperature = 0.1
  return config
