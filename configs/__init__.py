"""Experiment configs: each file exposes ``get_config(arg=None)`` returning an ``ml_collections.ConfigDict``.

Load one with ``stableaudio_jax.config_loader.load_config("configs/vae.py:tiny", overrides)``; installed copies
resolve as ``vae.py:tiny``.
"""
