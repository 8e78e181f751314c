"""The PyTorch side of `python -m sslax.export --format onnx` (see sslax/export_timm.py).

Run as a script in a subprocess, with torch, timm, safetensors and onnxruntime (the `export`
extra) and without jax or sslax:

  python sslax/_torch_export.py --dir OUT --reference REF.npz --result RESULT.json [--tol T]

It builds the timm twin from OUT/config.json and OUT/model.safetensors (strict load), checks
its features against REF.npz (sslax's features "features" of the NCHW "inputs"), exports it with
`torch.onnx.export` to OUT/model.onnx with a dynamic batch axis, runs that in onnxruntime at
batch sizes 1 and 3 against the same reference, and writes the max abs differences to RESULT.
A difference above T * max(1, max |features|) fails. Exit status 3: a package is missing.
"""

import argparse
import importlib.util
import json
import os
import sys

ONNX_FILE, ONNX_INPUT, ONNX_OUTPUT = "model.onnx", "pixel_values", "features"
# Past this the weights go to model.onnx.data beside the graph (protobuf's 2 GiB limit).
EXTERNAL_DATA_BYTES = 1 << 30


def _use_torchvision_stub() -> None:
  """timm imports torchvision at import time but its models need none of it; where the
  installed torchvision does not import (a wheel built for another torch build), load
  sslax/_torchvision_stub.py in its place."""
  for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
    del sys.modules[name]
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torchvision_stub.py")
  spec = importlib.util.spec_from_file_location("torchvision", path, submodule_search_locations=[])
  module = importlib.util.module_from_spec(spec)
  sys.modules["torchvision"] = module
  spec.loader.exec_module(module)
  print("note: torchvision does not import here; timm runs with sslax's stand-in", file=sys.stderr)


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--dir", required=True)
  parser.add_argument("--reference", required=True)
  parser.add_argument("--result", required=True)
  parser.add_argument("--tol", type=float, default=1e-3)
  args = parser.parse_args()
  try:
    import numpy as np
    import onnxruntime
    import safetensors.torch
    import torch
  except ImportError as e:
    print(f"error: {e}", file=sys.stderr)
    return 3
  try:
    import torchvision  # noqa: F401
  except Exception:  # noqa: BLE001 -- a broken torchvision raises RuntimeError, not ImportError
    _use_torchvision_stub()
  try:
    import timm
  except ImportError as e:
    print(f"error: {e}", file=sys.stderr)
    return 3

  with open(os.path.join(args.dir, "config.json")) as f:
    cfg = json.load(f)
  model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"]).eval()
  model.load_state_dict(safetensors.torch.load_file(os.path.join(args.dir, "model.safetensors")))
  with np.load(args.reference) as ref:
    inputs, expected = ref["inputs"], ref["features"]
  limit = args.tol * max(1.0, float(np.abs(expected).max()))

  def check(name: str, got) -> float:
    diff = float(np.abs(np.asarray(got) - expected[: len(got)]).max())
    if not diff <= limit:
      raise SystemExit(
        f"error: {name} differs from the sslax encoder by {diff:.3g} (max abs; limit {limit:.3g})"
      )
    return diff

  with torch.no_grad():
    result = {"torch_max_abs_diff": check("the timm model", model(torch.from_numpy(inputs)))}
    path = os.path.join(args.dir, ONNX_FILE)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    torch.onnx.export(
      model,
      (torch.from_numpy(inputs[:2]),),
      path,
      input_names=[ONNX_INPUT],
      output_names=[ONNX_OUTPUT],
      dynamic_shapes=({0: torch.export.Dim("batch")},),
      external_data=params > EXTERNAL_DATA_BYTES,
      dynamo=True,
      verbose=False,
    )
  session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
  for n in (1, 3):
    (out,) = session.run([ONNX_OUTPUT], {ONNX_INPUT: inputs[:n]})
    result[f"onnxruntime_batch{n}_max_abs_diff"] = check(f"the ONNX graph at batch {n}", out)
  result["torch_version"] = torch.__version__
  result["timm_version"] = timm.__version__
  result["onnxruntime_version"] = onnxruntime.__version__
  with open(args.result, "w") as f:
    json.dump(result, f)
  return 0


if __name__ == "__main__":
  sys.exit(main())
