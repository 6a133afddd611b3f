"""Stable Audio 3's conditioning: the prompt's text-encoder states and the requested duration, assembled into the
SA3 DiT's inputs (the reference's ``MultiConditioner`` with a ``T5GemmaConditioner`` and a ``NumberConditioner``).

  prompt         T5Gemma states [B, 256, 768]; positions the tokenizer padded replaced by a learned embedding
  seconds_total  clamp(s, 0, 384) / 384 → exponential Fourier features (256) → Linear → one token [B, 1, 768]
  cross          [prompt ; seconds_total]  → [B, 257, 768]        global = the seconds_total embedding [B, 768]

Guidance: the unconditional branch is all zeros (the 257 tokens, before the DiT's projection); a negative prompt's
padded positions are zeros too, not the learned embedding (the reference's ``forward``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stableaudio_jax.models.layers import DenseGeneral
from stableaudio_jax.models.sa3_dit import expo_fourier_features

Dtype = Any


class SecondsEmbedder(nn.Module):
    """A duration in seconds per example → one token ``[B, 1, features]``."""

    features: int = 768
    fourier_dim: int = 256
    max_seconds: float = 384.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, seconds: jax.Array) -> jax.Array:
        normalised = jnp.clip(jnp.asarray(seconds, jnp.float32), 0.0, self.max_seconds) / self.max_seconds
        features = expo_fourier_features(normalised, self.fourier_dim)
        token = DenseGeneral((self.features,), ("fourier_out", "text_embed"), use_bias=True, name="embedding",
                             dtype=self.dtype, param_dtype=self.param_dtype)(features)
        return token[:, None]


class SA3Conditioner(nn.Module):
    """``(text [B, S, D], text_mask [B, S], seconds [B])`` → ``(cross [B, S + 1, D], global [B, D])``."""

    features: int = 768
    fourier_dim: int = 256
    max_seconds: float = 384.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, text: jax.Array, text_mask: jax.Array, seconds: jax.Array) -> tuple[jax.Array, jax.Array]:
        if text.ndim != 3 or text.shape[-1] != self.features or text_mask.shape != text.shape[:2]:
            raise ValueError(f"SA3Conditioner: text {tuple(text.shape)} with mask {tuple(text_mask.shape)}; expected "
                             f"[B, S, {self.features}] and [B, S]")
        padding = self.param("padding_embedding", nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ("text_embed",)), (self.features,), self.param_dtype)
        prompt = jnp.where(text_mask[..., None].astype(bool), text.astype(self.dtype), padding.astype(self.dtype))
        token = SecondsEmbedder(self.features, self.fourier_dim, self.max_seconds, name="seconds_total",
                                dtype=self.dtype, param_dtype=self.param_dtype)(seconds)
        return jnp.concatenate([prompt, token.astype(self.dtype)], axis=1), token[:, 0]


def negative_cross(cross: jax.Array, text_mask: jax.Array) -> jax.Array:
    """A negative prompt's cross tokens (built by :class:`SA3Conditioner`) as the guidance branch reads them: its
    padded prompt positions zeroed (the duration token kept)."""
    keep = jnp.concatenate([text_mask.astype(bool), jnp.ones((cross.shape[0], 1), bool)], axis=1)
    return jnp.where(keep[..., None], cross, 0)


class SA3Denoiser(nn.Module):
    """The SA3 DiT with its conditioner: ``__call__(x, t, text, text_mask, seconds, local=None, padding_mask=None)``
    → velocity; ``condition`` and ``velocity`` split the two (generation conditions once, samples many times).
    Params: ``{"dit": ..., "conditioner": ...}``."""

    dit: nn.Module
    conditioner: SA3Conditioner

    @property
    def latent_channels(self) -> int:
        return self.dit.io_channels

    def condition(self, text, text_mask, seconds):
        return self.conditioner(text, text_mask, seconds)

    def velocity(self, x, t, cross, global_cond, local=None, padding_mask=None):
        return self.dit(x, t, cross, global_cond, local, padding_mask)

    def __call__(self, x, t, text, text_mask, seconds, local=None, padding_mask=None):
        cross, global_cond = self.condition(text, text_mask, seconds)
        return self.velocity(x, t, cross, global_cond, local, padding_mask)


def inpainting_conditioning(latents: jax.Array, keep: jax.Array) -> jax.Array:
    """The DiT's local conditioning ``[B, T, 1 + C]``: the keep mask (1 = keep) then the kept latents."""
    keep = keep.astype(latents.dtype)[..., None]
    return jnp.concatenate([keep, latents * keep], axis=-1)


@dataclasses.dataclass(frozen=True)
class SA3Conditioned:
    """The SA3 DiT and its conditioner in the shape the trainers hold a ``models.conditioned.ConditionedDenoiser``:
    params ``{"denoiser": DiT variables, "conditioner": conditioner variables}`` (the EMA and LoRA adapters cover
    ``denoiser``, as the reference's EMA covers its DiT); ``condition`` gives the DiT's keyword inputs
    (``cross_attn_cond``, ``global_cond``), so ``denoiser.apply(params["denoiser"], x, t, **cond)`` is the velocity.
    Only ``seconds_total`` conditions SA3 (no start-time token)."""

    denoiser: nn.Module            # models.sa3_dit.SA3DiT
    conditioner: SA3Conditioner
    kind = "sa3"

    @property
    def latent_channels(self) -> int:
        return self.denoiser.io_channels

    def init(self, rng: jax.Array, latents: jax.Array, text: jax.Array, text_mask: jax.Array) -> dict:
        dit_key, cond_key = jax.random.split(rng)
        seconds = jnp.zeros(latents.shape[:1], jnp.float32)
        conditioner = self.conditioner.init(cond_key, text, text_mask, seconds)
        cross, global_cond = self.conditioner.apply(conditioner, text, text_mask, seconds)
        local = jnp.zeros((*latents.shape[:2], self.denoiser.local_cond_dim), latents.dtype)
        dit = self.denoiser.init(dit_key, latents, seconds, cross, global_cond,
                                 local if self.denoiser.local_cond_dim else None)
        return {"denoiser": dit, "conditioner": conditioner}

    def condition(self, params: dict, text: jax.Array, text_mask: jax.Array, seconds_start: jax.Array | None,
                  seconds_total: jax.Array) -> dict:
        cross, global_cond = self.conditioner.apply(params["conditioner"], text, text_mask, seconds_total)
        return dict(cross_attn_cond=cross, global_cond=global_cond)

    def predict(self, params: dict, x: jax.Array, t: jax.Array, cond: dict) -> jax.Array:
        """The velocity; ``cond`` from :meth:`condition`, optionally with ``padding_mask`` (and ``local_cond``)."""
        return self.denoiser.apply(params["denoiser"], x, t, **cond)

    def denoiser_params(self, params: dict) -> dict:
        """As a stored SA3 model holds them (``store.sa3``: ``{"params": {"dit", "conditioner"}}``)."""
        return {"params": {"dit": params["denoiser"]["params"], "conditioner": params["conditioner"]["params"]}}

    @staticmethod
    def from_denoiser_params(stored: dict) -> dict:
        weights = stored["params"]
        return {"denoiser": {"params": weights["dit"]}, "conditioner": {"params": weights["conditioner"]}}
