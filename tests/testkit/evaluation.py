"""Shared by the evaluation and export tests: one tiny pretrained workdir per test session."""

import os
import shutil

from testkit.configs import tiny_config
from sslax import main

_TRAINED = {}


def trained_workdir(tmp_path_factory) -> str:
  """A real checkpoint made by `sslax.main.train_and_evaluate(tiny_config(), ...)` (what
  `python -m sslax.main` runs; tiny_config has no end-of-run report), trained once per session."""
  if "workdir" not in _TRAINED:
    workdir = str(tmp_path_factory.mktemp("trained"))
    main.train_and_evaluate(tiny_config(), workdir)
    _TRAINED["workdir"] = workdir
  return _TRAINED["workdir"]


def fresh_copy(workdir: str, tmp_path, name: str = "run") -> str:
  """A private copy of the trained workdir (tests that write results or caches use one)."""
  dest = os.path.join(str(tmp_path), name)
  shutil.copytree(workdir, dest)
  return dest
