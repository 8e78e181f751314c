r"""MoCo v3 ViT-S/16 on ImageNet-1k, the paper's recipe (Chen, Xie, He 2021, sec. 4-5, app. A).

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/mocov3_vits_tpu.py`):
  python -m sslax.main --config configs/mocov3_vits_tpu.py --workdir gs://BUCKET/mocov3_vits16

Data: TFDS `imagenet2012`, prepared once with the manual-download archives
in ArrayRecord format so it is read by random access (O(1) exact resume, per-example indices):
`tfds build imagenet2012 --manual_dir=... --file_format=array_record`, then
`--config.dataset.data_dir=gs://BUCKET/tfds`. (TFDS's default TFRecord format can only be
streamed, resumes by skipping everything read before, and is warned about at start; convert it
with `python -m sslax.data.shards --from tfds --input imagenet2012 ...` if it is already built.)

Recipe: 300 epochs at batch 4096; AdamW (lr = 1.5e-4 x B/256 = 2.4e-3, weight decay 0.1),
40 warmup epochs then cosine; ViT-S/16 (width 384, depth 12, 12 heads: moco-v3's `vit_small`,
where DINO's ViT-S and our `VARIANTS["S"]` have 6) with fixed 2D sin-cos position embeddings
and a class token; the random patch projection frozen (sec. 4.1,
`mocov3.freeze_patch_embed`); the reference's `MoCo_ViT` heads, every Linear bias-free:
projector 384 -> 4096 -> 4096 -> 256 and predictor 256 -> 4096 -> 256, each with BN + ReLU on
the hidden layers and a BN without affine on the output; momentum encoder EMA 0.99 -> 1
(cosine); symmetric InfoNCE over the global batch at tau = 0.2 (the ViT default), scaled by
2 tau; BYOL's asymmetric augmentations (blur 1.0 / 0.1, solarize 0.0 / 0.2) with colour
jitter 0.4 / 0.4 / 0.2 / 0.1 and ImageNet mean / std input normalisation (main_moco.py);
bfloat16 compute, float32 params.
Weight decay applies to every trained parameter, biases and LayerNorm included, as the
reference's torch.optim.AdamW(model.parameters()) (`optimizer.exclude_bias_and_norm=False`).

Expected runtime: not measured by us (the paper trains its ViTs on TPU v3 pods).
Expected accuracy (published, MoCo v3 paper table 4 / the reference repository, stated as the
paper's numbers, not ours): ViT-S/16, 300 epochs, linear probing top-1 73.2%. Protocol
(moco-v3 `main_lincls.py -a vit_small --lr=3`, CONFIG.md): a linear head on the frozen backbone,
random resized crops + flips, 90 epochs at batch 1024, SGD momentum 0.9, lr 3 x B/256, weight
decay 0, cosine. sslax runs that recipe: `python -m sslax.main --config
configs/linear_eval.py:gs://BUCKET/mocov3_vits16 --workdir gs://BUCKET/mocov3_vits16_linear`.
The end-of-run kNN (k=20, 200) and fast linear probe (frozen centre-crop features, AdamW) are
quick checks, not this protocol.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("mocov3", backbone="vit_s16")
  config.batch_size = 4096
  config.total_epochs = 300.0
  config.model.posemb = "sincos2d"
  config.model.num_heads = 12  # moco-v3 vits.py vit_small; VARIANTS["S"] (DINO's) has 6
  # main_moco.py: ColorJitter(brightness, contrast, saturation, hue) = (0.4, 0.4, 0.2, 0.1).
  config.augment.brightness = 0.4
  config.augment.contrast = 0.4
  config.augment.saturation = 0.2
  config.augment.hue = 0.1
  config.augment.normalize = "imagenet"  # main_moco.py: Normalize(ImageNet mean, std)
  config.mocov3.freeze_patch_embed = True
  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 1.5e-4
  config.optimizer.warmup_epochs = 40.0
  config.optimizer.weight_decay = 0.1
  config.optimizer.exclude_bias_and_norm = False  # torch.optim.AdamW(model.parameters(), ...)
  return config
