"""Softmax attention inside a band: every query sees the keys at most ``window`` positions away (SAME-L's sliding
window), or every key (``window=None``: SAME-S's chunks, which are short). Two implementations, equal to float32
rounding:

- ``xla``: queries in blocks of ``XLA_BLOCK`` against their band of keys (``block + 2 window``), one block at a time
  under ``lax.map``: memory O(L (block + 2 window)), never O(L^2); short sequences take one plain einsum.
- ``splash``: the Pallas TPU splash-attention kernel with a local mask. Its softmax runs block by block in VMEM, so
  no score matrix reaches HBM at all, and blocks wholly outside the band are skipped by the kernel's block mask
  (the ``xla`` path computes and discards the band's corners). TPU only (it lowers through Mosaic, also ahead of
  time for a TPU target); on CPU it runs under ``jax.experimental.pallas.tpu.force_tpu_interpret_mode()``, for
  tests.

``auto`` takes ``splash`` on TPU where there is a band to skip (a window and a sequence longer than one block),
``xla`` everywhere else: SAME-S's chunks of 34 tokens are far below a kernel block, where a Pallas call buys nothing.
That choice rests on what each path moves through HBM; neither has been timed on a TPU here (none was lent).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

IMPLS = ("auto", "xla", "splash")
XLA_BLOCK = 1024   # queries per step of the xla path
SPLASH_BLOCK = 512  # the kernel's largest query / key block (a multiple of 128, the TPU lane width)


def band_attention(q: jax.Array, k: jax.Array, v: jax.Array, window: int | None, impl: str = "auto") -> jax.Array:
    """Softmax attention ``[B, L, H, D]`` at ``1 / sqrt(D)``, keys within ``window`` positions of each query."""
    if impl not in IMPLS:
        raise ValueError(f"band attention implementation {impl!r}; expected one of {IMPLS}")
    if impl == "auto":
        banded = window is not None and q.shape[1] > splash_block(window)
        impl = "splash" if banded and jax.default_backend() == "tpu" else "xla"
    if impl == "splash":
        return splash_band_attention(q, k, v, window)
    return xla_band_attention(q, k, v, window)


def _full(q, k, v, window: int | None):
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
    if window is not None:
        i = jnp.arange(q.shape[1])
        scores = jnp.where(jnp.abs(i[:, None] - i[None, :]) <= window, scores, -jnp.inf)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1).astype(v.dtype), v)


def xla_band_attention(q, k, v, window: int | None, block: int = XLA_BLOCK):
    if window is None or q.shape[1] <= block:
        return _full(q, k, v, window)
    length = q.shape[1]
    blocks = -(-length // block)
    pad = blocks * block - length
    q = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
    k, v = (jnp.pad(t, ((0, 0), (window, pad + window), (0, 0), (0, 0))) for t in (k, v))
    span = block + 2 * window
    scale = q.shape[-1] ** -0.5

    def one(n):
        qs = jax.lax.dynamic_slice_in_dim(q, n * block, block, axis=1)
        ks, vs = (jax.lax.dynamic_slice_in_dim(t, n * block, span, axis=1) for t in (k, v))
        scores = jnp.einsum("bqhd,bkhd->bhqk", qs, ks, preferred_element_type=jnp.float32) * scale
        key_pos = n * block - window + jnp.arange(span)  # positions in the unpadded sequence
        query_pos = n * block + jnp.arange(block)
        near = (jnp.abs(query_pos[:, None] - key_pos[None, :]) <= window) & (key_pos >= 0) & (key_pos < length)
        scores = jnp.where(near, scores, -jnp.inf)
        return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1).astype(vs.dtype), vs)

    out = jax.lax.map(one, jnp.arange(blocks))  # [blocks, B, block, H, D]
    out = jnp.moveaxis(out, 0, 1).reshape(q.shape[0], blocks * block, *q.shape[2:])
    return out[:, :length]


def splash_block(window: int | None) -> int:
    """The kernel's block for a band: the smallest multiple of 128 that holds ``window`` (a query block then
    computes at most three key blocks), at most ``SPLASH_BLOCK``. SAME-L's 17-token band takes 128-blocks: 384 keys
    computed per query where 512-blocks would compute 1,536."""
    if window is None:
        return SPLASH_BLOCK
    return min(SPLASH_BLOCK, 128 * max(1, -(-window // 128)))


def splash_band_attention(q, k, v, window: int | None, block: int | None = None):
    """The splash kernel on ``[B, L, H, D]``: batch and heads folded into the kernel's heads (every sequence has the
    same band and the same padding), the sequence padded to whole blocks, the padding made its own segment
    (segment ids 0 against the real tokens' 1) so that no real query sees a padded key."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    batch, length, heads, head_dim = q.shape
    block = block or splash_block(window)
    padded = -(-length // block) * block
    kernel = _splash_kernel(padded, batch * heads, window, min(block, padded))

    def fold(t):  # [B, L, H, D] -> [B * H, Lp, D]
        t = jnp.pad(t, ((0, 0), (0, padded - length), (0, 0), (0, 0)))
        return t.transpose(0, 2, 1, 3).reshape(batch * heads, padded, head_dim)

    real = (jnp.arange(padded) < length).astype(jnp.int32)
    scaled = (q.astype(jnp.float32) * head_dim ** -0.5).astype(q.dtype)  # the kernel does not scale
    out = kernel(fold(scaled), fold(k), fold(v), segment_ids=splash.SegmentIds(q=real, kv=real))
    out = out.reshape(batch, heads, padded, head_dim).transpose(0, 2, 1, 3)
    return out[:, :length].astype(q.dtype)


@functools.lru_cache(maxsize=32)
def _splash_kernel(length: int, heads: int, window: int | None, block: int):
    """One kernel per shape (building its block mask is host work, done once)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks
    if window is None:
        one = masks.FullMask((length, length))
    else:
        one = masks.LocalMask((length, length), (window, window), offset=0)
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                              block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    return splash.make_splash_mha(masks.MultiHeadMask(tuple(one for _ in range(heads))), block_sizes=sizes,
                                  head_shards=1, q_seq_shards=1)

