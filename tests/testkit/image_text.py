"""Shared by the image-text tests: a tiny (image, caption) pairs file written in tmp_path."""

import json
import os

import numpy as np
from PIL import Image


def write_pairs(root, n=24, fmt="jsonl"):
  """n RGBA PNGs (left half opaque colour i, right half transparent) and a pairs file."""
  rows = []
  for i in range(n):
    a = np.zeros((10, 8 + i % 3, 4), np.uint8)
    a[:, :4] = (7 * i, 100, 200 - i, 255)
    Image.fromarray(a, "RGBA").save(os.path.join(root, f"img_{i}.png"))
    rows.append({"image": f"img_{i}.png", "caption": f"Thing {i}" if i % 5 else "", "label": i % 3})
  if fmt == "jsonl":
    path = os.path.join(root, "pairs.jsonl")
    with open(path, "w") as f:
      f.write("\n".join(json.dumps(r) for r in rows) + "\n")
  else:
    path = os.path.join(root, "pairs.csv")
    with open(path, "w") as f:
      f.write(
        "image,caption,label\n"
        + "".join(f'{r["image"]},"{r["caption"]}",{r["label"]}\n' for r in rows)
      )
  return path, rows
