r"""Every method's Fashion-MNIST config at the same small budget: kNN, linear probe, wall time.

  python benchmarks/learning.py [--steps 300] [--methods simclr,byol,...] [--out benchmarks/results]

Runs `python -m sslax.main --config configs/<method>_fashion_mnist.py` for each method with
the same global batch and number of steps, evaluates on the Fashion-MNIST test set (kNN bank /
probe train set: the first --eval_train examples of the train split), and writes
learning.json and learning.md (the README's table) to --out. Each method must beat the
random-init encoder of its own network; the script exits 1 if one does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Table order: row name -> config file. Add new methods here.
CONFIGS = {
  m: f"configs/{m}_fashion_mnist.py"
  for m in ("simclr", "mocov2", "byol", "simsiam", "barlow_twins", "vicreg", "swav")
}
CONFIGS.update({"mae": "configs/mae_vit_fashion_mnist.py"})
CONFIGS.update(
  {"mocov3": "configs/mocov3_vit_fashion_mnist.py", "dino": "configs/dino_fashion_mnist.py"}
)
CONFIGS.update({"dino_vit": "configs/dino_vit_fashion_mnist.py"})
CONFIGS.update({m: f"configs/{m}_fashion_mnist.py" for m in ("rotnet", "jigsaw", "relative_patch")})
# Pretext II; colorization needs colour: it runs on Open Clip Art (its own test set and baselines).
CONFIGS.update(
  {
    "inpainting": "configs/inpainting_fashion_mnist.py",
    "deepcluster": "configs/deepcluster_fashion_mnist.py",
    "colorization (openclipart)": "configs/colorization_openclipart.py",
  }
)
# Memory-bank contrastive methods; CMC contrasts L with ab, so it runs on Open Clip Art.
CONFIGS.update(
  {
    "instdisc": "configs/instdisc_fashion_mnist.py",
    "cmc (openclipart)": "configs/cmc_openclipart.py",
  }
)
# Image-text: Fashion-MNIST images with label-templated captions (zero-shot: sslax.evaluate).
CONFIGS.update(
  {
    "clip": "configs/clip_fashion_mnist_templates.py",
    "siglip": "configs/clip_fashion_mnist_templates.py:siglip",
  }
)
# The whole timeline: surrogate classes (Exemplar-CNN) and patch prediction (CPC v2).
CONFIGS.update(
  {"exemplar": "configs/exemplar_fashion_mnist.py", "cpc": "configs/cpc_fashion_mnist.py"}
)


def run_method(method: str, args) -> dict:
  workdir = os.path.join(args.workdir, method)
  cmd = [
    sys.executable,
    "-m",
    "sslax.main",
    "--config",
    CONFIGS[method],
    "--workdir",
    workdir,
    f"--config.total_steps={args.steps}",
    f"--config.batch_size={args.batch_size}",
    f"--config.eval.num_train_examples={args.eval_train}",
    "--config.log_every_steps=100",
    f"--config.checkpoint_every_steps={args.steps}",
    f"--config.seed={args.seed}",
  ]
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  wall = time.time() - t0
  if proc.returncode != 0:
    return {"method": method, "error": proc.stderr[-2000:], "wall_s": round(wall, 1)}
  from sslax import workdir as workdir_lib

  res = workdir_lib.latest_record(workdir_lib.read_results(workdir), "report")["results"]
  final_metrics = {}
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(metrics_path):  # the last logged training metrics (pretext accuracy ...)
    with open(metrics_path) as f:
      final_metrics = json.loads(f.read().splitlines()[-1])
  return {
    "method": method,
    "steps": args.steps,
    "seed": args.seed,
    "final_metrics": final_metrics,
    "batch_size": args.batch_size,
    "epochs": round(final_metrics.get("epoch", args.steps * args.batch_size / 60000), 2),
    "wall_s": round(wall, 1),
    "pretrained": res["pretrained"],
    "random_init": res["random_init"],
    "raw_pixels": res["raw_pixels"],
  }


def _pretext(row) -> str:
  """Methods with a pretext classification task log `pretext_accuracy` and `pretext_chance`."""
  m = row.get("final_metrics", {})
  if "pretext_accuracy" not in m:
    return "-"
  return f"{100 * m['pretext_accuracy']:.1f} ({100 * m.get('pretext_chance', float('nan')):.1f})"


def markdown(rows) -> str:
  lines = [
    "| method | epochs | kNN k=20 | kNN k=200 | linear | random-init kNN k=20 / linear | "
    "raw-pixel kNN k=20 / linear | pretext acc (chance) | wall time |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['method']} | failed | | | | | | | {r['wall_s']:.0f} s |")
      continue
    p, q, x = r["pretrained"], r["random_init"], r["raw_pixels"]
    lines.append(
      f"| {r['method']} | {r['epochs']} | {100 * p['knn_top1_k20']:.1f} | "
      f"{100 * p['knn_top1_k200']:.1f} | {100 * p['linear_top1']:.1f} | "
      f"{100 * q['knn_top1_k20']:.1f} / {100 * q['linear_top1']:.1f} | "
      f"{100 * x['knn_top1_k20']:.1f} / {100 * x['linear_top1']:.1f} | {_pretext(r)} | "
      f"{r['wall_s'] / 60:.1f} min |"
    )
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--eval_train", type=int, default=10000)
  parser.add_argument("--methods", default=",".join(CONFIGS))
  parser.add_argument("--seed", type=int, default=0, help="config.seed of every run")
  parser.add_argument("--workdir", default="/tmp/sslax_learning")
  parser.add_argument("--out", default="benchmarks/results")
  parser.add_argument(
    "--overwrite",
    action="store_true",
    help="replace learning.json instead of merging these methods' rows into it",
  )
  args = parser.parse_args()
  rows = []
  for method in args.methods.split(","):
    rows.append(run_method(method, args))
    print(json.dumps(rows[-1]), flush=True)
  os.makedirs(args.out, exist_ok=True)
  # Merge with the rows already there, so methods can be (re)measured a few at a time.
  json_path = os.path.join(args.out, "learning.json")
  if os.path.exists(json_path) and not args.overwrite:
    with open(json_path) as f:
      previous = json.load(f)["rows"]
    ran = {r["method"] for r in rows}
    order = {m: i for i, m in enumerate(CONFIGS)}
    rows = sorted(
      [r for r in previous if r["method"] not in ran] + rows,
      key=lambda r: order.get(r["method"], len(order)),
    )
  meta = {
    "steps": args.steps,
    "batch_size": args.batch_size,
    "eval_train": args.eval_train,
    "seed": args.seed,
    "cpu_count": os.cpu_count(),
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
  }
  with open(os.path.join(args.out, "learning.json"), "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=2)
  table = markdown(rows)
  with open(os.path.join(args.out, "learning.md"), "w") as f:
    f.write(table)
  print(table)
  beaten = [
    r
    for r in rows
    if "error" not in r
    and r["pretrained"]["knn_top1_k20"] > r["random_init"]["knn_top1_k20"]
    and r["pretrained"]["linear_top1"] > r["random_init"]["linear_top1"]
  ]
  sys.exit(0 if len(beaten) == len(rows) else 1)


if __name__ == "__main__":
  main()
