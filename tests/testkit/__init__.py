"""Helpers shared by the tests (import as `testkit.<module>`; tests/ is on sys.path because
tests/conftest.py lives there).

  configs     tiny_config: fake data, ResNet-10 at 1/8 width, 16 px
  steps       train steps and losses on 8 fake devices vs 1 (joint-embedding methods)
  pretext     the same for the pretext tasks
  collapse    collapse measures for short real-data runs
  evaluation  one tiny pretrained workdir per session
  image_text  image-text fixtures (jsonl/csv pairs)
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
