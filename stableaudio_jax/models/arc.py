"""The small head of ARC's discriminator (``training/arc_steps.py``): per-token scores from the hidden states of
the denoiser's first blocks, averaged into one score per example."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stableaudio_jax.models.attention import LayerNorm

Dtype = Any


class ScoreHead(nn.Module):
    hidden: int = 256
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """``features [B, L, D]`` → ``[B]`` (float32); with ``mask [B, L]`` the mean over its True positions (the
        frames of variable-length clips: padding would tell real from fake)."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = LayerNorm(name="norm", **kw)(features.astype(self.dtype))
        h = nn.silu(nn.Dense(self.hidden, name="fc1", **kw)(h))
        scores = nn.Dense(1, name="fc2", **kw)(h)[..., 0]
        scores = scores.astype(jnp.float32)
        if mask is None:
            return jnp.mean(scores, axis=-1)
        mask = mask.astype(jnp.float32)
        return jnp.sum(scores * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
