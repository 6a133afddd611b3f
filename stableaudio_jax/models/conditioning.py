"""Timing conditioning and the assembly of the denoiser's conditioning inputs.

Stable Audio Open (stable-audio-tools' ``NumberConditioner``): each of seconds_start / seconds_total is clamped to
[min_val, max_val] = [0, 512] (values outside are clamped, as the reference does), normalised to [0, 1], expanded
into learned Fourier features ``[x, sin(2 pi x w), cos(2 pi x w)]`` (257-d) and projected by a Linear to 768. The two
timing embeddings enter twice:

  cross-attention tokens  = [T5 tokens (128) | seconds_start | seconds_total]   → [B, 130, 768]
  global conditioning     = [seconds_start | seconds_total] (channels)          → [B, 1536]

Classifier-free guidance replaces the *whole* cross-attention sequence (timing tokens included) by zeros; the global
conditioning is never dropped. Stable Audio 1.0 instead embeds integer seconds (``IntEmbedder``, an ``nn.Embed`` over
0..512) and uses a learned, position-indexed null sequence (``LearnedNullEmbedding``) for guidance.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from stableaudio_jax.models.layers import DenseGeneral, torch_default_bias_init, torch_default_kernel_init

Dtype = Any


class LearnedFourierFeatures(nn.Module):
    """``[x, sin(2 pi x w), cos(2 pi x w)]`` with learned w ~ N(0, 1) of size dim // 2 (reference order)."""

    dim: int = 256
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.dim % 2:
            raise ValueError(f"LearnedFourierFeatures.dim is {self.dim}; expected an even number")
        w = self.param("weights", nn.with_logical_partitioning(nn.initializers.normal(1.0), ("fourier",)),
                       (self.dim // 2,), self.param_dtype)
        x = x.astype(jnp.float32)[..., None]
        freqs = x * w.astype(jnp.float32) * (2 * math.pi)
        return jnp.concatenate([x, jnp.sin(freqs), jnp.cos(freqs)], axis=-1)


class NumberEmbedder(nn.Module):
    """A float per example → one conditioning token ``[B, 1, features]`` (no activation after the Linear)."""

    features: int = 768
    fourier_dim: int = 256
    min_val: float = 0.0
    max_val: float = 512.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, values: jax.Array) -> jax.Array:
        values = jnp.clip(jnp.asarray(values, jnp.float32), self.min_val, self.max_val)
        normalised = (values - self.min_val) / (self.max_val - self.min_val)
        feats = LearnedFourierFeatures(self.fourier_dim, self.param_dtype, name="fourier")(normalised)
        out = nn.Dense(self.features, dtype=self.dtype, param_dtype=self.param_dtype, name="proj",
                       kernel_init=nn.with_logical_partitioning(nn.linear.default_kernel_init,
                                                                ("fourier_out", "embed")),
                       bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)))(feats)
        return out.reshape(values.shape + (1, self.features))


class IntEmbedder(nn.Module):
    """Stable Audio 1.0's integer timing embedding: ``nn.Embed(max_val - min_val + 1, features)`` over clamped
    integer seconds (fractions are floored) → ``[B, 1, features]``."""

    features: int = 768
    min_val: int = 0
    max_val: int = 512
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, values: jax.Array) -> jax.Array:
        index = jnp.clip(jnp.floor(jnp.asarray(values, jnp.float32)), self.min_val, self.max_val).astype(jnp.int32)
        table = nn.Embed(self.max_val - self.min_val + 1, self.features, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="embed",
                         embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")))
        return table(index - self.min_val)[..., None, :]


class LearnedNullEmbedding(nn.Module):
    """The Stable Audio 1.0 U-Net's learned null conditioning: one learned vector per sequence position."""

    max_length: int = 79
    features: int = 768
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, batch: int, length: int) -> jax.Array:
        if length > self.max_length:
            raise ValueError(f"LearnedNullEmbedding: sequence length {length} exceeds max_length {self.max_length}")
        table = nn.Embed(self.max_length, self.features, dtype=self.dtype, param_dtype=self.param_dtype,
                         name="embed",
                         embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")))
        return jnp.broadcast_to(table(jnp.arange(length)), (batch, length, self.features))


class TimingConditioner(nn.Module):
    """seconds_start and seconds_total embedders → (start token, total token), each ``[B, 1, features]``.

    ``style``: 'number' (Stable Audio Open / 2.0, learned Fourier features) or 'int' (Stable Audio 1.0).
    """

    features: int = 768
    min_val: float = 0.0
    max_val: float = 512.0
    style: str = "number"
    fourier_dim: int = 256
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        kw = dict(features=self.features, dtype=self.dtype, param_dtype=self.param_dtype)
        if self.style == "number":
            make = lambda: NumberEmbedder(fourier_dim=self.fourier_dim, min_val=self.min_val,  # noqa: E731
                                          max_val=self.max_val, **kw)
        elif self.style == "int":
            make = lambda: IntEmbedder(min_val=int(self.min_val), max_val=int(self.max_val), **kw)  # noqa: E731
        else:
            raise ValueError(f"TimingConditioner.style is {self.style!r}; expected 'number' or 'int'")
        self.seconds_start = make()
        self.seconds_total = make()

    def __call__(self, seconds_start: jax.Array, seconds_total: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.seconds_start(seconds_start), self.seconds_total(seconds_total)


class TextProjection(nn.Module):
    """stable-audio-tools' text conditioner ``proj_out``: Linear(text width → ``features``) with bias, applied to
    the text encoder's features before padded positions are zeroed. A model has one when its conditioning width
    (``cond_dim``) differs from the text encoder's (or the config asks for ``project_out``)."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, text: jax.Array) -> jax.Array:
        return DenseGeneral((self.features,), ("text_embed", "cond_embed"), use_bias=True,
                            kernel_init=torch_default_kernel_init(0, 1),
                            bias_init=torch_default_bias_init(text.shape[-1]), dtype=self.dtype,
                            param_dtype=self.param_dtype, name="proj")(text)


@flax.struct.dataclass
class Conditioning:
    """What the denoiser consumes: cross-attention tokens and their mask, and the global conditioning vector."""

    cross_attn: jax.Array       # [B, N, D]
    cross_attn_mask: jax.Array  # [B, N] bool
    global_cond: jax.Array      # [B, G]


def assemble_conditioning(text: jax.Array, text_mask: jax.Array, cross_tokens: Sequence[jax.Array],
                          global_tokens: Sequence[jax.Array]) -> Conditioning:
    """Concatenates in the reference's order: ``[text | *cross_tokens]`` over the sequence axis and
    ``global_tokens`` over channels. SAO: cross_tokens = global_tokens = (start, total).

    ``text`` must already have its padded positions zeroed (the T5 conditioner does it).
    """
    batch = text.shape[0]
    for i, token in enumerate((*cross_tokens, *global_tokens)):
        if token.ndim != 3 or token.shape[0] != batch or token.shape[1] != 1:
            raise ValueError(f"assemble_conditioning: timing token #{i} has shape {tuple(token.shape)}; "
                             f"expected [{batch}, 1, features]")
    cross = jnp.concatenate([text.astype(jnp.float32)] + [t.astype(jnp.float32) for t in cross_tokens], axis=1)
    mask = jnp.concatenate([text_mask.astype(bool)] + [jnp.ones((batch, 1), bool)] * len(cross_tokens), axis=1)
    global_cond = jnp.concatenate([t[:, 0].astype(jnp.float32) for t in global_tokens], axis=-1)
    return Conditioning(cross_attn=cross, cross_attn_mask=mask, global_cond=global_cond)


def null_conditioning(cond: Conditioning, null_cross: jax.Array | None = None) -> Conditioning:
    """The unconditional branch for guidance: cross-attention tokens → zeros (or a learned null sequence, SA 1.0);
    the global (timing) conditioning is kept."""
    null = jnp.zeros_like(cond.cross_attn) if null_cross is None else jnp.broadcast_to(
        null_cross.astype(cond.cross_attn.dtype), cond.cross_attn.shape)
    return cond.replace(cross_attn=null)


def negative_conditioning(cond: Conditioning, negative_text: jax.Array, negative_mask: jax.Array) -> Conditioning:
    """The negative-prompt branch for guidance: ``cond`` with its text tokens replaced by the negative prompt's
    (padded positions zeroed, as the reference does); timing tokens and global conditioning unchanged."""
    length = negative_text.shape[1]
    if negative_text.shape[0] != cond.cross_attn.shape[0] or length > cond.cross_attn.shape[1]:
        raise ValueError(f"negative_conditioning: negative text has shape {tuple(negative_text.shape)}; expected "
                         f"[{cond.cross_attn.shape[0]}, <= {cond.cross_attn.shape[1]}, features]")
    text = jnp.where(negative_mask[..., None].astype(bool), negative_text, 0.0).astype(cond.cross_attn.dtype)
    return cond.replace(cross_attn=cond.cross_attn.at[:, :length].set(text),
                        cross_attn_mask=cond.cross_attn_mask.at[:, :length].set(negative_mask.astype(bool)))


def cfg_dropout(rng: jax.Array, cond: Conditioning, prob: float, null_cross: jax.Array | None = None) -> Conditioning:
    """Training-time guidance dropout: per example, with probability ``prob``, the whole cross-attention sequence
    becomes the null sequence; the global conditioning is never dropped."""
    drop = jax.random.bernoulli(rng, prob, (cond.cross_attn.shape[0], 1, 1))
    return cond.replace(cross_attn=jnp.where(drop, null_conditioning(cond, null_cross).cross_attn, cond.cross_attn))


def guidance_batch(cond: Conditioning, uncond: Conditioning) -> Conditioning:
    """[cond; uncond] along the batch axis: one denoiser call serves both guidance branches."""
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b], axis=0), cond, uncond)
