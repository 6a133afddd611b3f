"""Gradient accumulation shared by the VAE and diffusion steps: one optimiser step from ``count`` micro-batches.

The per-step batch (any pytree of arrays with a common leading batch axis) is split into ``count`` micro-batches
and their gradients are averaged in a ``lax.scan``, so the activation memory is that of one micro-batch.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def micro_batches(batch: Any, count: int) -> Any:
    """``[B, ...]`` leaves → ``[count, B / count, ...]``."""
    def split(x):
        if x.shape[0] % count:
            raise ValueError(f"batch of {x.shape[0]} is not divisible into {count} accumulation steps "
                             "(training.accumulation)")
        return x.reshape((count, x.shape[0] // count) + x.shape[1:])
    return jax.tree_util.tree_map(split, batch)


def accumulate(loss_fn: Callable, params: Any, batch: Any, rng: jax.Array, count: int) -> tuple[Any, Any]:
    """Mean (gradients, aux) of ``loss_fn(params, micro_batch, rng) -> (loss, aux)`` over ``count`` micro-batches
    of ``batch`` (each with its own key)."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    rngs = jax.random.split(rng, count)
    if count == 1:
        (_, aux), grads = grad_fn(params, batch, rngs[0])
        return grads, aux
    parts = micro_batches(batch, count)
    first = jax.tree_util.tree_map(lambda x: x[0], parts)

    def body(acc, xs):
        (_, aux), grads = grad_fn(params, *xs)
        return jax.tree_util.tree_map(jnp.add, acc, (grads, aux)), None

    (_, aux0), g0 = jax.eval_shape(grad_fn, params, first, rngs[0])
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), (g0, aux0))
    total, _ = jax.lax.scan(body, zeros, (parts, rngs))
    return jax.tree_util.tree_map(lambda x: x / count, total)
