"""Shared by the evaluation and export tests: one tiny pretrained workdir per test session."""

import os
import shutil

from sslax import train
from conftest import tiny_config

_TRAINED = {}


def trained_workdir(tmp_path_factory) -> str:
  """A real checkpoint made by sslax.train.train(tiny_config(), ...), trained once per session."""
  if "workdir" not in _TRAINED:
    workdir = str(tmp_path_factory.mktemp("trained"))
    train.train(tiny_config(), workdir)
    _TRAINED["workdir"] = workdir
  return _TRAINED["workdir"]


def fresh_copy(workdir: str, tmp_path) -> str:
  """A private copy of the trained workdir (tests that write results or caches use one)."""
  dest = os.path.join(str(tmp_path), "run")
  shutil.copytree(workdir, dest)
  return dest
