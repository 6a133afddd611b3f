"""stableaudio-jax: Stable Audio latent diffusion (text-to-audio, text-to-music) in JAX/Flax.

Sub-packages: ``models`` (Linen modules), ``convert`` (stable-audio-tools / diffusers checkpoints), ``parallel``
(meshes and sharding rules). Importing this package never imports torch or tensorflow.
"""
__version__ = "0.1.0"
