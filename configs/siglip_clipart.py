r"""SigLIP on Open Clip Art: `configs/clip_clipart.py` with the sigmoid loss (t' = log 10, b = -10).

Commands:
  python -m sslax.main --config configs/siglip_clipart.py --workdir runs/siglip_clipart
  python -m sslax.evaluate --workdir runs/siglip_clipart --protocol image_text_retrieval

Same data, towers, budget and optimizer as clip_clipart.py (see its docstring). Not yet
measured by us on this budget: run the commands above; compare with clip_clipart's numbers.
"""

from sslax.presets import image_text_cpu


def get_config():
  config = image_text_cpu("siglip")
  config.dataset.name = "openclipart_captions"
  config.dataset.image_size = 32
  config.dataset.zero_shot_templates = (
    "a clip art of {label}.",
    "a drawing of {label}.",
    "{label}.",
  )
  config.total_steps = 150
  config.text.context_length = 64
  config.augment.jitter_prob = 0.5
  config.augment.jitter_strength = 0.5
  config.optimizer.warmup_epochs = 1.0
  config.eval.batch_size = 256
  config.checkpoint_every_steps = 150
  config.siglip.chunked_loss = True  # the paper's ring; identical numbers on one device
  return config
