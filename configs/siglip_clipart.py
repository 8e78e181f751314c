r"""SigLIP on Open Clip Art: `configs/clip_clipart.py` with the sigmoid loss (t' = log 10, b = -10).

Commands:
  python -m sslax.main --config configs/siglip_clipart.py --workdir runs/siglip_clipart
  python -m sslax.evaluate --workdir runs/siglip_clipart --protocol image_text_retrieval

Same data, towers, budget and optimizer as clip_clipart.py (see its docstring). Not yet
measured by us on this budget: run the commands above; compare with clip_clipart's numbers.
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
  "clip_clipart", os.path.join(os.path.dirname(os.path.abspath(__file__)), "clip_clipart.py")
)
_clip_clipart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_clip_clipart)


def get_config():
  config = _clip_clipart.get_config("siglip")
  config.siglip.chunked_loss = True  # the paper's ring; identical numbers on one device
  return config
