"""A Hugging Face ``tokenizer.json`` tokenizer (the ``tokenizers`` library), called as Stable Audio 3 calls T5Gemma's:
``AutoTokenizer.from_pretrained(dir)(texts, truncation=True, max_length=256, padding="max_length")``.

What ``transformers`` (5.x) does with such a directory, and so what this does:
- special tokens come from ``tokenizer.json``'s own post-processor (e.g. ``<bos> … <eos>``); the
  ``add_bos_token`` / ``add_eos_token`` entries of ``tokenizer_config.json`` do not change it;
- truncation keeps the special tokens and cuts the text (from the right, unless ``truncation_side`` says left);
- padding uses ``pad_token`` up to ``max_length`` on ``padding_side``; where ``tokenizer_config.json`` names no
  side, Gemma tokenizer classes pad on the left and the others on the right (transformers' class defaults).
The mask is True on every token that is not padding.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from stableaudio_jax import paths
from stableaudio_jax.store.tokenizers import TokenizedPrompts, _as_prompt_list, flag_truncated

TOKENIZER_FILE, CONFIG_FILE = "tokenizer.json", "tokenizer_config.json"


def _token_text(token) -> str | None:
    """A ``tokenizer_config.json`` token entry: a string or an AddedToken dict (``{"content": ...}``)."""
    return token.get("content") if isinstance(token, dict) else token


def default_padding_side(tokenizer_class: str | None) -> str:
    return "left" if (tokenizer_class or "").startswith("Gemma") else "right"


class HFTokenizer:
    """``tokenizer(prompts) -> (ids [B, max_length] int32, mask [B, max_length] bool)``."""

    def __init__(self, tokenizer, max_length: int, pad_token: str, padding_side: str = "right",
                 truncation_side: str = "right", source: str = "tokenizer"):
        for name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if side not in ("left", "right"):
                raise ValueError(f"{source}: {name} is {side!r}; expected 'left' or 'right'")
        if max_length < 1:
            raise ValueError(f"HFTokenizer: max_length is {max_length}; expected >= 1")
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"{source}: the pad token {pad_token!r} is not in the vocabulary")
        self.tokenizer, self.max_length, self.source = tokenizer, max_length, source
        self.pad_id, self.padding_side = int(pad_id), padding_side
        self.pad_token, self.truncation_side = pad_token, truncation_side
        self.files: dict[str, str] = {}  # {name in a stored model: path}, when read from a directory
        self.whole = tokenizer.from_str(tokenizer.to_str())  # an untruncated, unpadded copy: tokens each prompt needs
        self.whole.no_truncation()
        self.whole.no_padding()
        tokenizer.enable_truncation(max_length, direction=truncation_side)
        tokenizer.enable_padding(direction=padding_side, pad_id=self.pad_id, pad_token=pad_token, length=max_length)

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, max_length: int = 256) -> "HFTokenizer":
        from tokenizers import Tokenizer
        directory = os.fspath(directory)
        file = paths.join(directory, TOKENIZER_FILE)
        if not paths.isfile(file):
            raise FileNotFoundError(f"{directory}: no {TOKENIZER_FILE}; expected a Hugging Face tokenizer directory "
                                    "(e.g. T5Gemma's)")
        config_file = paths.join(directory, CONFIG_FILE)
        config = paths.read_json(config_file) if paths.isfile(config_file) else {}
        pad = _token_text(config.get("pad_token")) or "<pad>"
        side = config.get("padding_side") or default_padding_side(config.get("tokenizer_class"))
        tokenizer = cls(Tokenizer.from_str(paths.read_text(file)), max_length, pad, side,
                        config.get("truncation_side") or "right", source=file)
        tokenizer.files = {TOKENIZER_FILE: file} | ({CONFIG_FILE: config_file} if config else {})
        return tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def tokenize_with_info(self, prompts: str | Sequence[str]) -> TokenizedPrompts:
        prompts = _as_prompt_list(prompts)
        encoded = self.tokenizer.encode_batch(prompts)
        ids = np.array([e.ids for e in encoded], np.int32)
        mask = np.array([e.attention_mask for e in encoded], bool)
        num_tokens = np.array([len(e.ids) for e in self.whole.encode_batch(prompts)])
        return TokenizedPrompts(ids, mask, num_tokens, flag_truncated(self.source, num_tokens, self.max_length))

    def __call__(self, prompts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        out = self.tokenize_with_info(prompts)
        return out.ids, out.mask
