"""Text encoders with their tokenizer and weights bound: what the pre-encoder, training demos and the pipeline
call to turn prompts into features. The T5 conditioner, as stable-audio-tools' ``T5Conditioner`` (without its
``proj_out``, which belongs to the diffusion model's conditioners: ``models.conditioned``).

``encode(ids, mask)`` returns ``last_hidden_state * mask`` in float32 (padded positions exactly zero), which is what
the reference feeds the denoiser. ``embed_prompts`` is the batch API for pre-encoding datasets: fixed-size batches
(one compile), sharded over the mesh's data axes, results returned to the host; nothing is cached between calls.
"""
from __future__ import annotations

import copy
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from stableaudio_jax.store.tokenizers import SPIECE_FILE, T5Tokenizer
from stableaudio_jax.models.t5 import T5Encoder

BATCH_AXES = ("data", "fsdp")


class BoundTextEncoder:
    """A text encoder with its weights and tokenizer bound: ``tokenize(prompts) -> (ids, mask)``,
    ``encode(ids, mask) -> features [B, L, width]`` float32, ``embed_prompts`` for datasets. Subclasses give
    ``width``, ``config``, ``tokenizer_files`` and ``_features(params, ids, mask)`` (jitted)."""

    def __init__(self, module: Any, params: Any, tokenizer: Any = None, max_length: int = 128,
                 source: str = "text encoder"):
        self.module, self.params, self.tokenizer = module, params, tokenizer
        self.max_length = tokenizer.max_length if tokenizer is not None else max_length
        self.source = source

    @property
    def d_model(self) -> int:
        """The width of the features (the name the pre-encoder and manifests use)."""
        return self.width

    def with_params(self, params: Any) -> "BoundTextEncoder":
        """The same encoder with other (e.g. device-placed) copies of its weights."""
        bound = copy.copy(self)
        bound.params = params  # the same values: a cached content hash stays valid
        return bound

    @property
    def output_length(self) -> int:
        """Tokens per prompt in what ``encode`` returns."""
        return self.max_length

    @functools.cached_property
    def sha256(self) -> str:
        """The content hash of the encoder's weights (``store.format.weights_sha256``)."""
        from stableaudio_jax.store.format import weights_sha256
        return weights_sha256(self.params)

    def tokenize(self, prompts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.tokenizer is None:
            raise FileNotFoundError(f"{self.source}: no tokenizer; tokenize() needs the tokenizer files")
        return self.tokenizer(prompts)

    def encode(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        ids, mask = jnp.asarray(ids), jnp.asarray(mask)
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(f"encode: ids {tuple(ids.shape)} and mask {tuple(mask.shape)} must both be "
                             "[batch, length]")
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"encode: ids have dtype {ids.dtype}; expected integer token ids")
        return self._features(self.params, ids.astype(jnp.int32), mask.astype(bool))

    def __call__(self, prompts: str | Sequence[str]) -> tuple[jax.Array, np.ndarray]:
        """prompts → (features [B, L, width] float32, mask [B, L] bool)."""
        ids, mask = self.tokenize(prompts)
        return self.encode(ids, mask), self.output_mask(mask)

    def embed_prompts(self, prompts: Sequence[str], batch_size: int = 256, mesh: Mesh | None = None,
                      out_dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """Embeds many prompts in fixed-size batches (the last one padded, so one compile serves all), each batch
        sharded over the mesh's ('data', 'fsdp') axes with the params replicated. Returns host arrays
        (features [N, L, width] in ``out_dtype``, mask [N, L])."""
        ids, mask = self.tokenize(prompts)
        count = len(ids)
        encode = self._sharded_encode(batch_size, mesh)
        params = self.params if mesh is None else jax.device_put(self.params, NamedSharding(mesh, PartitionSpec()))
        out = None
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            batch_ids = np.zeros((batch_size, ids.shape[1]), np.int32)
            batch_mask = np.zeros((batch_size, ids.shape[1]), bool)
            batch_ids[: stop - start], batch_mask[: stop - start] = ids[start:stop], mask[start:stop]
            batch_mask[stop - start:, 0] = True  # padding rows: one real position keeps softmax well defined
            emb = np.asarray(jax.device_get(encode(params, batch_ids, batch_mask)))
            if out is None:
                out = np.empty((count,) + emb.shape[1:], out_dtype)
            out[start:stop] = emb[: stop - start].astype(out_dtype)
        return out, self.output_mask(mask)

    def _sharded_encode(self, batch_size: int, mesh: Mesh | None):
        if mesh is None:
            return self._features
        shards = int(np.prod([mesh.shape[a] for a in BATCH_AXES if a in mesh.shape]))
        if batch_size % shards:
            raise ValueError(f"embed_prompts: batch_size {batch_size} is not divisible by the mesh's data axes "
                             f"{BATCH_AXES} ({shards} devices)")
        batch = NamedSharding(mesh, PartitionSpec(tuple(a for a in BATCH_AXES if a in mesh.shape)))
        replicated = NamedSharding(mesh, PartitionSpec())
        return jax.jit(self._features, in_shardings=(replicated, batch, batch), out_shardings=batch)

    def _features(self, params: Any, ids: jax.Array, mask: jax.Array) -> jax.Array:
        raise NotImplementedError

    def output_mask(self, mask: np.ndarray) -> np.ndarray:
        """The mask of what ``encode`` returns (the token mask, unless an encoder pools)."""
        return mask


class T5TextEncoder(BoundTextEncoder):
    """The T5 conditioner: ``encode`` returns ``last_hidden_state * mask`` (padded positions exactly zero)."""

    def __init__(self, module: T5Encoder, params: Any, tokenizer: T5Tokenizer | None = None, max_length: int = 128,
                 source: str = "T5 text encoder"):
        super().__init__(module, params, tokenizer, max_length, source)

    @property
    def width(self) -> int:
        return self.module.d_model

    @property
    def config(self) -> dict:
        """The stored config of this encoder (``store.builders.text_encoder_from_config`` rebuilds it)."""
        return {"type": "t5", "model": t5_model_config(self), "max_length": int(self.max_length)}

    @property
    def tokenizer_files(self) -> dict[str, str]:
        """{name in a stored model: path} of the files the tokenizer needs."""
        return {} if self.tokenizer is None else {SPIECE_FILE: self.tokenizer.model_file}

    def with_max_length(self, max_length: int) -> "T5TextEncoder":
        """The same encoder, tokenizing to ``max_length`` tokens."""
        if max_length == self.max_length:
            return self
        tokenizer = None if self.tokenizer is None else T5Tokenizer(self.tokenizer.model_file, max_length)
        return T5TextEncoder(self.module, self.params, tokenizer, max_length, self.source)

    def _features(self, params: Any, ids: jax.Array, mask: jax.Array) -> jax.Array:
        return _t5_features(self.module, params, ids, mask)


@functools.partial(jax.jit, static_argnums=0)
def _t5_features(module: T5Encoder, params: Any, ids: jax.Array, mask: jax.Array) -> jax.Array:
    hidden = module.apply(params, ids, mask)
    return hidden.astype(jnp.float32) * mask[..., None].astype(jnp.float32)


def t5_model_config(text: T5TextEncoder) -> dict:
    """The T5 sizes as our configs spell them (configs/t5.py ``model``)."""
    return {k: getattr(text.module, k) for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                                                 "num_buckets", "max_distance", "layer_norm_eps", "feed_forward")}
