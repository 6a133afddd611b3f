"""Stable Audio 3's SAME autoencoder weights (the reference's ``AudioAutoencoder`` state dict: ``encoder.layers.*``,
``decoder.layers.*``, ``bottleneck.*``; inside an SA3 checkpoint under ``pretransform.model.``) → our
:class:`~stableaudio_jax.models.same.SAMEAutoencoder` params.

Layouts: Linear ``[out, in]`` → kernel ``[in, out]``; the old-style weight-normed mapping conv keeps ``weight_v``
``[out, in, k]`` → ``[k, in, out]`` and ``weight_g`` ``[out, 1, 1]`` → ``[out]``; the bottleneck's
``[1, dim, 1]`` vectors → ``[dim]``. Buffers that carry no parameters (``rope.inv_freq``, the empty
``noise_scaling_factor``) are ignored; every other tensor must map.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from stableaudio_jax.convert.state_dict import Path, fill_params
from stableaudio_jax.models.same import SAMEAutoencoder

PREFIX = "pretransform.model."
_BLOCK = {"encoder": "encoder.layers.0", "decoder": "decoder.layers.3"}
_LINEAR = {"encoder_out": "encoder.layers.2", "decoder_in": "decoder.layers.1"}
_TRANSFORMER = {("ff", "proj"): "ff.ff.0.proj", ("ff", "out"): "ff.ff.2"}


def _key(path: Path) -> str:
    head, rest = path[0], path[1:]
    if head in _LINEAR:
        return f"{_LINEAR[head]}.{'weight' if rest == ('kernel',) else 'bias'}"
    if head == "bottleneck":
        return f"bottleneck.{rest[0]}"
    block = _BLOCK[head]
    if rest[0] in ("mapping", "new_tokens"):
        return ".".join((block, *rest))
    layer, inner = rest[0].split("_")[1], rest[1:]
    leaf = "weight" if inner[-1] == "kernel" else inner[-1]
    module = _TRANSFORMER.get(inner[:2], ".".join(inner[:-1]))
    return f"{block}.transformers.{layer}.{module}.{leaf}"


def _layout(path: Path, value: np.ndarray) -> np.ndarray:
    if path[-1] == "kernel":
        return value.T
    if path[-1] == "weight_v":
        return value.transpose(2, 1, 0)
    if path[-1] == "weight_g" or path[0] == "bottleneck":
        return value.reshape(-1)
    return value


def same_params_from_state_dict(state: Mapping[str, np.ndarray], module: SAMEAutoencoder,
                                source: str = "SAME state dict") -> dict:
    """``{'params': ...}`` for ``module`` from the reference's autoencoder state dict (or a whole SA3 checkpoint,
    whose other tensors are left out)."""
    if any(k.startswith(PREFIX) for k in state):
        state = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    ignore = {k for k in state if k.endswith("rope.inv_freq") or k == "bottleneck.noise_scaling_factor"}
    audio = jax.ShapeDtypeStruct((1, module.downsampling_ratio * module.chunk_size // module.stride,
                                  module.audio_channels), jnp.float32)
    abstract = jax.eval_shape(lambda a: module.init(jax.random.key(0), a), audio)["params"]
    return {"params": fill_params(state, abstract, _key, _layout, source, ignore=ignore)}
