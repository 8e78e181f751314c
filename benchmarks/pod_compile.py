r"""Every configs/*_tpu.py compiled for its TPU topology at its full batch: does it fit, how fast
could it go.

  python benchmarks/pod_compile.py [--configs simclr_tpu,byol_tpu] [--out benchmarks/results]

Each config is compiled in its own process by `python -m sslax.aot` (XLA:TPU through libtpu, no
TPU attached; `bash scripts/setup.sh --test` installs libtpu in .venv/libtpu) for the topology
its `TPU_TOPOLOGY` names. Writes pod_compile.json (everything sslax.aot reports) and
pod_compile.md (the README's table). A compile takes minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sslax import aot  # noqa: E402


def compile_config(path: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(
    [sys.executable, "-m", "sslax.aot", "--config", path],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
  )
  name = os.path.basename(path)[:-3]
  if proc.returncode != 0:
    tail = [line for line in proc.stderr.splitlines() if line.strip()][-3:]
    return {"config": name, "error": " | ".join(tail)[-500:]}
  start = proc.stdout.index("{")
  return {"config": name, **json.loads(proc.stdout[start:])}


def table(rows: list[dict]) -> str:
  head = (
    "| config | topology | global batch (per chip) | peak HBM / chip | fits | TFLOP / chip / step "
    "| collectives (count, MB / chip / step) | roofline bound | max img/s/chip | max MFU | compile |"
  )
  lines = [head, "|" + "---|" * 11]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['config']} | - | - | - | error: {r['error'][:120]} |" + " - |" * 6)
      continue
    colls = ", ".join(
      f"{op} {int(v['count'])} / {v['bytes'] / 1e6:.1f}"
      for op, v in sorted(r["collectives"].items())
    )
    lines.append(
      f"| {r['config']} | {r['topology']} ({r['chips']} chips) | {r['global_batch']} "
      f"({r['per_chip_batch']:g}) | {r['peak_gib']:.1f} / {r['hbm_gib']:g} GiB | "
      f"{'yes' if r['fits'] else '**no**'} | {r['flops_per_chip_step'] / 1e12:.2f} | {colls} | "
      f"{r['bound']} | {r['max_img_s_per_chip']:,.0f} | {r['max_mfu']:.0%} | "
      f"{r['compile_s'] / 60:.1f} min |"
    )
  return "\n".join(lines) + "\n"


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", default="", help="comma-separated names (default: all *_tpu)")
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
  args = parser.parse_args()
  paths = aot.tpu_configs()
  if args.configs:
    wanted = set(args.configs.split(","))
    paths = [p for p in paths if os.path.basename(p)[:-3] in wanted]
  json_path = os.path.join(args.out, "pod_compile.json")
  previous = {}
  if os.path.exists(json_path):  # rows are merged per config, like benchmarks/learning.py
    with open(json_path) as f:
      previous = {r["config"]: r for r in json.load(f)["rows"]}
  os.makedirs(args.out, exist_ok=True)
  for path in paths:  # written after each config: a long run can be stopped and resumed
    t0 = time.time()
    row = compile_config(path)
    row["measured"] = datetime.date.today().isoformat()
    previous[row["config"]] = row
    print(f"{row['config']}: {time.time() - t0:.0f}s", row.get("error") or row.get("peak_gib"))
    rows = [previous[k] for k in sorted(previous)]
    with open(json_path, "w") as f:
      json.dump({"machine": _cpu_name(), "rows": rows}, f, indent=1)
    with open(os.path.join(args.out, "pod_compile.md"), "w") as f:
      f.write(table(rows))
  return 0 if all(r.get("fits") for r in previous.values()) else 1


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else platform.machine()
  except OSError:
    return platform.machine()


if __name__ == "__main__":
  sys.exit(main())
