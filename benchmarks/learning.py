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
METHODS = ("simclr", "mocov2", "byol", "simsiam", "barlow_twins", "vicreg", "swav")


def run_method(method: str, args) -> dict:
  workdir = os.path.join(args.workdir, method)
  cmd = [sys.executable, "-m", "sslax.main", "--config", f"configs/{method}_fashion_mnist.py",
         "--workdir", workdir, f"--config.total_steps={args.steps}",
         f"--config.batch_size={args.batch_size}", f"--config.eval.num_train_examples={args.eval_train}",
         "--config.log_every_steps=100", f"--config.checkpoint_every_steps={args.steps}"]
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  wall = time.time() - t0
  if proc.returncode != 0:
    return {"method": method, "error": proc.stderr[-2000:], "wall_s": round(wall, 1)}
  with open(os.path.join(workdir, "results.json")) as f:
    res = json.load(f)["results"]
  return {"method": method, "steps": args.steps, "batch_size": args.batch_size,
          "epochs": round(args.steps * args.batch_size / 60000, 2), "wall_s": round(wall, 1),
          "pretrained": res["pretrained"], "random_init": res["random_init"],
          "raw_pixels": res["raw_pixels"]}


def markdown(rows) -> str:
  lines = ["| method | epochs | kNN k=20 | kNN k=200 | linear | random-init kNN k=20 / linear | wall time |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['method']} | failed | | | | | {r['wall_s']:.0f} s |")
      continue
    p, q = r["pretrained"], r["random_init"]
    lines.append(f"| {r['method']} | {r['epochs']} | {100 * p['knn_top1_k20']:.1f} | "
                 f"{100 * p['knn_top1_k200']:.1f} | {100 * p['linear_top1']:.1f} | "
                 f"{100 * q['knn_top1_k20']:.1f} / {100 * q['linear_top1']:.1f} | {r['wall_s'] / 60:.1f} min |")
  raw = next((r["raw_pixels"] for r in rows if "raw_pixels" in r), None)
  if raw:
    lines.append(f"| raw pixels | - | {100 * raw['knn_top1_k20']:.1f} | {100 * raw['knn_top1_k200']:.1f} | "
                 f"{100 * raw['linear_top1']:.1f} | | |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--eval_train", type=int, default=10000)
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--workdir", default="/tmp/sslax_learning")
  parser.add_argument("--out", default="benchmarks/results")
  args = parser.parse_args()
  rows = []
  for method in args.methods.split(","):
    rows.append(run_method(method, args))
    print(json.dumps(rows[-1]), flush=True)
  os.makedirs(args.out, exist_ok=True)
  meta = {"steps": args.steps, "batch_size": args.batch_size, "eval_train": args.eval_train,
          "cpu_count": os.cpu_count(), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S")}
  with open(os.path.join(args.out, "learning.json"), "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=2)
  table = markdown(rows)
  with open(os.path.join(args.out, "learning.md"), "w") as f:
    f.write(table)
  print(table)
  beaten = [r for r in rows if "error" not in r and
            r["pretrained"]["knn_top1_k20"] > r["random_init"]["knn_top1_k20"] and
            r["pretrained"]["linear_top1"] > r["random_init"]["linear_top1"]]
  sys.exit(0 if len(beaten) == len(rows) else 1)


if __name__ == "__main__":
  main()
