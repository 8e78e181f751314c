r"""MAE ViT-B/16 on ImageNet-1k, the paper's 1600-epoch recipe (He et al. 2021, appendix A.1).

Command (Cloud TPU v5e-16, topology v5e:4x4, one process per host; checked by
`python -m sslax.aot --config configs/mae_vitb16_tpu.py`):
  python -m sslax.main --config configs/mae_vitb16_tpu.py --workdir gs://BUCKET/mae_vitb16
Fine-tune (appendix A.2 without mixup / cutmix / RandAugment / random erasing, which sslax's
fine-tuning does not implement, so expect somewhat lower than the paper's number):
  python -m sslax.evaluate --workdir gs://BUCKET/mae_vitb16 --protocol finetune

Data: TFDS `imagenet2012`, prepared once with the manual-download archives
in ArrayRecord format so it is read by random access (O(1) exact resume, per-example indices):
`tfds build imagenet2012 --manual_dir=... --file_format=array_record`, then
`--config.dataset.data_dir=gs://BUCKET/tfds`. (TFDS's default TFRecord format can only be
streamed, resumes by skipping everything read before, and is warned about at start; convert it
with `python -m sslax.data.shards --from tfds --input imagenet2012 ...` if it is already built.)

Pretraining recipe: ViT-B/16 encoder (768 wide, 12 blocks, 12 heads, fixed 2D sin-cos position
embeddings, class token), mask ratio 0.75, decoder 512 wide, 8 blocks, 16 heads, loss on
per-patch-normalised pixels (norm_pix_loss; the patch's unbiased variance, as torch's `.var`
in models_mae.py), batch 4096, AdamW (b1 0.9, b2 0.95, weight decay
0.05), lr = 1.5e-4 x B/256 = 2.4e-3, 40 warmup epochs then cosine, 1600 epochs, random resized
crop (0.2, 1) + flip only, ImageNet mean / std input normalisation. bfloat16 compute (params
float32), remat of each block (saves the
matmul outputs, recomputes the rest). Params are small enough (86M) for plain data
parallelism; for ViT-L/H set --config.mesh.fsdp=N to shard params and optimizer state.

Expected runtime: not measured by us (the paper reports ~31 h for 1600 epochs of ViT-L on 128
TPU v3 cores; ViT-B is about 2x cheaper per step).
Expected accuracy (published by the MAE paper, table 3 / sec. 4, not measured by us):
fine-tuning top-1 83.6% (ViT-B/16, 1600 epochs, 100 fine-tuning epochs with layer decay 0.65);
linear probing 68.0%. Protocols (facebookresearch/mae): fine-tuning = `main_finetune.py`
(FINETUNE.md), in sslax the `--protocol finetune` command above; linear probing =
`main_linprobe.py` (class token, BatchNorm without affine before the head, LARS, batch 16384,
lr 0.1 x B/256, 10 warmup epochs + cosine, 90 epochs, weight decay 0, random resized crops +
flips). `python -m sslax.main --config configs/linear_eval.py:gs://BUCKET/mae_vitb16 --workdir
gs://BUCKET/mae_vitb16_linear` also trains a head on crops, but with plain momentum SGD at batch
1024, no BatchNorm before the head and on the mean of the patch tokens (model.pool "gap"): not
MAE's linear probe. The end-of-run kNN and fast linear probe (frozen centre-crop features,
AdamW) are quick checks, far below fine-tuning for MAE.
"""

from sslax.presets import imagenet_tpu

# The slice this recipe is compiled and checked for (sslax.aot, benchmarks/pod_compile.py).
TPU_TOPOLOGY = "v5e:4x4"


def get_config():
  config = imagenet_tpu("mae", backbone="vit_b16")  # the mae defaults are the paper's
  config.batch_size = 4096
  config.total_epochs = 1600.0
  config.model.posemb = "sincos2d"  # models_mae.py: fixed, the class token's row all zero
  config.model.pool = "gap"  # MAE fine-tunes with global pooling
  config.model.remat_policy = "dots_with_no_batch_dims_saveable"
  config.augment.crop_scale = (0.2, 1.0)
  config.augment.normalize = "imagenet"  # main_pretrain.py: Normalize(ImageNet mean, std)
  config.optimizer.name = "adamw"
  config.optimizer.base_lr = 1.5e-4  # x 4096 / 256 = 2.4e-3
  config.optimizer.b2 = 0.95
  config.optimizer.weight_decay = 0.05
  config.optimizer.warmup_epochs = 40.0
  config.checkpoint_every_steps = 2000
  # Fine-tuning, appendix A.2 (ViT-B): 100 epochs, batch 1024, lr 5e-4 x 1024/256, layer decay
  # 0.65, weight decay 0.05, drop path 0.1, label smoothing 0.1, 5 warmup epochs.
  config.eval.finetune_epochs = 100
  config.eval.finetune_batch_size = 1024
  config.eval.finetune_optimizer = "adamw"
  config.eval.finetune_lr = 2e-3
  config.eval.finetune_weight_decay = 0.05
  config.eval.finetune_layer_decay = 0.65
  config.eval.finetune_label_smoothing = 0.1
  config.eval.finetune_warmup_epochs = 5.0
  config.eval.finetune_drop_path_rate = 0.1
  return config
