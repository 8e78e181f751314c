"""Small configs for unit tests."""

from sslax import config as config_lib


def tiny_config(method: str = "simclr"):
  """A config small enough for a unit test: fake data, ResNet-10 at 1/8 width, 16 px.

  It holds `method`'s section at its defaults (SimCLR's with small heads); switch later with
  config_lib.set_method(c, name).
  """
  c = config_lib.base_config(method)
  c.dataset.name = "fake"
  c.dataset.image_size = 16
  c.dataset.num_train_examples = 64
  c.batch_size = 16
  c.total_steps = 4
  c.model.depth = 10
  c.model.width = 0.125
  if method == "simclr":
    c.simclr.proj_hidden_dim = 32
    c.simclr.proj_dim = 16
  c.optimizer.warmup_epochs = 0.0
  c.eval.at_end = False
  return c
