"""stableaudio-jax: Stable Audio latent diffusion (text-to-audio, text-to-music) in JAX/Flax.

Sub-packages: ``models`` (Linen modules), ``store`` (stored models: save/load every kind), ``convert``
(stable-audio-tools / diffusers checkpoints), ``parallel`` (meshes and sharding rules), ``inference`` (the
text-to-audio pipeline), ``training``, ``data``. Layers and conventions: docs/design.md. Importing this package
never imports torch or tensorflow.
"""
__version__ = "0.1.0"
