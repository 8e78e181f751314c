"""sslax: self-supervised visual representation learning in JAX/Flax."""

__version__ = "0.3.0"


def __getattr__(name):
  # Lazy: `import sslax` stays cheap; load_encoder pulls in jax (and flax for bundles) on use.
  if name == "load_encoder":
    from sslax.export import load_encoder  # local: `import sslax` must not import jax

    return load_encoder
  raise AttributeError(f"module 'sslax' has no attribute {name!r}")
