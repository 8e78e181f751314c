r"""CMC ResNet-50 on ImageNet-1k, L vs ab with memory banks (Tian, Krishnan & Isola 2019,
"Contrastive Multiview Coding"; HobbitLong/CMC train_CMC.py).

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/cmc_tpu.py`):
  python -m sslax.main --config configs/cmc_tpu.py --workdir gs://BUCKET/cmc_r50 \
    --config.dataset.data_dir=/data/imagenet

Data: the memory banks are read and written by example index, so this needs a random-access
source: ImageNet as an image folder (`/data/imagenet/{train,val}/<wnid>/*.JPEG`), record shards
(`python -m sslax.data.shards`, dataset.name="shards") or TFDS prepared in ArrayRecord format,
not a streamed TFRecord TFDS copy (refused with a clear error).

Recipe (train_CMC.py, `--model resnet50v2`, the paper's "ResNet-50" row): one whole ResNet-50
per view (L: 1 input channel, ab: 2; 47M parameters together), each with a Linear to 128 dims,
L2-normalised; one memory bank per view (2 x 1.28M x 128), NCE with m = 16384 noise rows
(the script's --nce_k default) at temperature 0.07, bank momentum 0.5, one Z per direction
fixed from the first batch; loss L -> ab plus ab -> L; batch 128 (the README's ResNet
command); SGD lr 0.03, momentum 0.9, weight decay 1e-4 on every parameter, lr x0.1 at epochs
120, 160 and 200, 240 epochs; RandomResizedCrop(224, scale 0.08-1) and flips only; Lab
normalised with the script's mean/std. Evaluation: the concatenated pooled features of both
encoders (4096-d), as LinearProbing.py.
Differences: bfloat16 compute; cross-replica BatchNorm; our ResNet's stem is as wide as its
stages (the reference's stays at 64 channels when it narrows the network: same at width 1).

Expected runtime: not measured by us (two ResNet-50s: about twice a SimCLR-sized step per
image). XLA:TPU compile for v5e:4x4 (`sslax.aot`, on CPU): 2.4 GiB peak memory per chip (both
replicated banks included), fits the 16 GiB.
Expected accuracy (published; not reproduced): ImageNet linear top-1 of CMC with two ResNet-50s
(L+ab, 47M), 66.2% top-1 / 87.0% top-5 in the ECCV 2020 version's table (as listed by Papers
with Code; earlier arXiv versions report lower numbers). The README notes that its released
v2/v3 weights were trained with FastAutoAugment (+0.8-1%), which we do not have. Two ResNet-50
x2 (188M, `--config.model.width=2`): 68.4% (the README), 70.6% (ECCV).
Protocol: HobbitLong/CMC `LinearProbing.py --learning_rate 30 --layer 6` (the README's ResNet
setting): a linear head on the frozen, concatenated pooled L and ab features, random resized
crops (0.2-1) + flips, 60 epochs at batch 256, SGD momentum 0.9, lr 30 (x0.2 at epochs 30, 40
and 50), weight decay 0 (that the ECCV table used exactly these: not checked). sslax's
`configs/linear_eval.py` does not take CMC runs (it rebuilds one ResNet, not the two encoders);
`python -m sslax.evaluate --workdir gs://BUCKET/cmc_r50 --protocol linear` and the end-of-run
kNN / fast linear probe use frozen centre-crop features of both encoders: not this protocol.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("cmc")  # one ResNet-50 per view (resnet50v2)
  config.dataset.name = "image_folder"
  config.dataset.data_dir = "/data/imagenet"
  config.dataset.test_split = "val"
  config.batch_size = 128
  config.total_epochs = 240.0
  config.cmc.negatives = "memory_bank"
  config.cmc.num_negatives = 16384
  config.augment.crop_scale = (0.08, 1.0)  # --crop_low 0.08 for ResNets on ImageNet
  config.optimizer.name = "sgd"
  config.optimizer.base_lr = 0.03
  config.optimizer.lr_scaling = "none"
  config.optimizer.warmup_epochs = 0.0
  config.optimizer.weight_decay = 1e-4
  config.optimizer.exclude_bias_and_norm = False  # SGD(model.parameters(), weight_decay=...)
  config.optimizer.lr_decay_epochs = (120, 160, 200)
  config.checkpoint_every_steps = 5000
  return config
