r"""MoCo v3 ViT-S/16 on ImageNet-1k, the paper's recipe (Chen, Xie, He 2021, sec. 4-5, app. A).

Command (Cloud TPU pod slice, one process per host):
  python -m sslax.main --config configs/mocov3_vits_tpu.py --workdir gs://BUCKET/mocov3_vits16

Data: TFDS `imagenet2012`, prepared once with the manual-download archives
(`tfds build imagenet2012 --manual_dir=...`), then `--config.dataset.data_dir=gs://BUCKET/tfds`.

Recipe: 300 epochs at batch 4096; AdamW (lr = 1.5e-4 x B/256 = 2.4e-3, weight decay 0.1),
40 warmup epochs then cosine; ViT-S/16 (width 384, depth 12, 6 heads) with fixed 2D sin-cos
position embeddings and a class token; the random patch projection frozen (sec. 4.1,
`mocov3.freeze_patch_embed`); projector 384 -> 4096 -> 4096 -> 256 (BN; last BN without
affine), predictor 256 -> 4096 -> 256; momentum encoder EMA 0.99 -> 1 (cosine); symmetric
InfoNCE over the global batch at tau = 0.2, scaled by 2 tau; BYOL's asymmetric augmentations
(blur 1.0 / 0.1, solarize 0.0 / 0.2); bfloat16 compute, float32 params.
Differences from the paper: weight decay skips 1-D params (biases, LayerNorm), where the
reference's AdamW decays every parameter; colour jitter is SimCLR's at strength 0.5
(saturation 0.4 where MoCo v3 uses 0.2).

Expected runtime: not measured by us (the paper trains its ViTs on TPU v3 pods).
Expected accuracy (published, MoCo v3 paper table 4 / the reference repository, stated as the
paper's numbers, not ours): ViT-S/16, 300 epochs, linear probing top-1 73.2%. Our own
end-of-training evaluation is kNN (k=20, 200) and a linear probe on frozen features.
"""

from sslax.presets import imagenet_tpu


def get_config():
  config = imagenet_tpu("mocov3", backbone="vit_s16")
  config.batch_size = 4096
  config.total_epochs = 300.0
  config.model.posemb = "sincos2d"
  config.augment.jitter_strength = 0.5
  config.mocov3.freeze_patch_embed = True
  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 1.5e-4
  config.optimizer.warmup_epochs = 40.0
  config.optimizer.weight_decay = 0.1
  return config
