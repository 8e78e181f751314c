"""The one code style (pyproject.toml [tool.ruff]): CI fails when a file is not formatted."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_python_file_is_formatted():
  ruff = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
  assert ruff, "ruff is missing: install the test extra (bash scripts/setup.sh --test)"
  done = subprocess.run(
    [ruff, "format", "--check", "--diff", "."], cwd=ROOT, capture_output=True, text=True
  )
  assert done.returncode == 0, (
    "Files not formatted; run `.venv/bin/ruff format .`:\n" + done.stdout[-4000:] + done.stderr
  )
