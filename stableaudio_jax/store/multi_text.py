"""Several text encoders as one (T5 and CLAP together, as stable-audio-tools' multi-conditioner allows).

Each prompt is tokenized and encoded by every part; what the pre-encoder stores and the denoiser reads is one
feature sequence, the parts one after the other along the tokens ([t5 | clap]), zero-padded to the widest part,
with the parts' masks side by side. The diffusion model's conditioners (``models.conditioned.TextPart``) cut it
back into parts, each with its own ``proj_out``. Token ids are concatenated the same way, so
``encode(*tokenize(prompts))`` and ``embed_prompts`` work as for a single encoder.

Stored as a text encoder of type ``multi`` whose parts are components (each a stored text encoder of its own).
Configs name the parts by id and give their order apart (``{"order": ["t5", "clap"], "parts": {id: config}}``):
JSON manifests sort keys, and frozen configs (the compile caches' keys) cannot hold dicts inside lists.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from stableaudio_jax.store.format import components_sha256
from stableaudio_jax.store.text_encoders import BoundTextEncoder

MULTI_TEXT = "multi"


def ordered_parts(section: Any, where: str = "config.conditioning.text") -> list[tuple[str, Any]]:
    """``[(id, part config)]`` of a multi-conditioner section ``{"order": [ids], "parts": {id: config}}``."""
    order, parts = list(section.get("order") or []), section.get("parts") or {}
    if len(order) < 2 or len(set(order)) != len(order) or sorted(order) != sorted(parts):
        raise ValueError(f"{where}: a multi-conditioner text needs >= 2 parts, each id once in 'order' and in "
                         f"'parts'; got order {order} and parts {sorted(parts)}")
    return [(name, parts[name]) for name in order]


class _JoinedTokenizer:
    def __init__(self, parts: Sequence[tuple[str, BoundTextEncoder]]):
        self.parts = parts
        self.max_length = sum(text.max_length for _, text in parts)

    def __call__(self, prompts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        tokens = [text.tokenize(prompts) for _, text in self.parts]
        return np.concatenate([i for i, _ in tokens], 1), np.concatenate([m for _, m in tokens], 1)


class MultiText(BoundTextEncoder):
    """Text encoders named by id, in order; ``params`` is ``{id: that part's params}``."""

    def __init__(self, parts: Sequence[tuple[str, BoundTextEncoder]], source: str = ""):
        names = [name for name, _ in parts]
        if len(parts) < 2 or len(set(names)) != len(names):
            raise ValueError(f"a multi-conditioner text encoder needs >= 2 parts with distinct ids; got {names}")
        for name, text in parts:
            if isinstance(text, MultiText):
                raise ValueError(f"text part {name!r} ({text.source}) is itself a multi-conditioner encoder")
        self.parts = tuple(parts)
        tokenizer = None if any(t.tokenizer is None for _, t in parts) else _JoinedTokenizer(self.parts)
        source = source or " + ".join(f"{name}={text.source}" for name, text in parts)
        super().__init__(None, {name: text.params for name, text in parts}, tokenizer,
                         sum(t.max_length for _, t in parts), source)

    @property
    def width(self) -> int:
        return max(text.width for _, text in self.parts)

    @property
    def output_length(self) -> int:
        return sum(text.output_length for _, text in self.parts)

    @property
    def config(self) -> dict:
        """``{"type": "multi", "model": {"order": [ids], "parts": {id: that encoder's config}}, "max_length"}``."""
        return {"type": MULTI_TEXT, "model": {"order": [name for name, _ in self.parts],
                                              "parts": {name: text.config for name, text in self.parts}},
                "max_length": int(self.max_length)}

    def conditioning_config(self) -> dict:
        """The diffusion config's ``conditioning.text`` for models reading these features."""
        parts = {name: dict(text.config, width=int(text.width)) for name, text in self.parts}
        return {"type": MULTI_TEXT, "order": [name for name, _ in self.parts], "parts": parts,
                "width": int(self.width), "max_length": int(self.output_length)}

    @property
    def sha256(self) -> str:  # what a stored composite (parts as components) records
        return components_sha256({name: text.sha256 for name, text in self.parts})

    def with_params(self, params: Any) -> "MultiText":
        return MultiText([(name, text.with_params(params[name])) for name, text in self.parts], self.source)

    def _features(self, params: Any, ids: Any, mask: Any) -> Any:
        pieces, start = [], 0
        for name, text in self.parts:
            stop = start + text.max_length
            piece = text._features(params[name], ids[:, start:stop], mask[:, start:stop])
            pieces.append(jnp.pad(piece, ((0, 0), (0, 0), (0, self.width - piece.shape[-1]))))
            start = stop
        return jnp.concatenate(pieces, axis=1)

    def output_mask(self, mask: np.ndarray) -> np.ndarray:
        pieces, start = [], 0
        for _, text in self.parts:
            pieces.append(text.output_mask(mask[:, start:start + text.max_length]))
            start += text.max_length
        return np.concatenate(pieces, axis=1)
