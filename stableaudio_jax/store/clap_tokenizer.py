"""CLAP's text tokenisation: RoBERTa's byte-level BPE (the ``tokenizers`` library), as LAION CLAP calls
``RobertaTokenizer.from_pretrained("roberta-base")(texts, padding="max_length", truncation=True, max_length=77)``.

Each prompt becomes ``<s>`` (id 0) + BPE ids + ``</s>`` (2), truncated to ``max_length`` (the BPE ids are cut, the
two specials kept), then ``<pad>`` (1) up to ``max_length``; the mask is True on the non-pad tokens. An empty
prompt gives ``<s></s>``. The vocabulary comes from a Hugging Face RoBERTa tokenizer directory: ``vocab.json`` +
``merges.txt`` (or ``tokenizer.json``).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from stableaudio_jax import paths
from stableaudio_jax.store.tokenizers import TokenizedPrompts, _as_prompt_list, flag_truncated

BOS, PAD, EOS = "<s>", "<pad>", "</s>"
VOCAB_FILE, MERGES_FILE, TOKENIZER_FILE = "vocab.json", "merges.txt", "tokenizer.json"


class ClapTokenizer:
    """``tokenizer(prompts) -> (ids [B, max_length] int32, mask [B, max_length] bool)``."""

    def __init__(self, tokenizer, max_length: int = 77, files: dict[str, str] | None = None):
        if max_length < 2:
            raise ValueError(f"ClapTokenizer: max_length is {max_length}; expected >= 2 (<s> and </s>)")
        self.tokenizer, self.max_length, self.files = tokenizer, max_length, dict(files or {})
        self.bos_id, self.pad_id, self.eos_id = (self._special(t) for t in (BOS, PAD, EOS))

    def _special(self, token: str) -> int:
        found = self.tokenizer.token_to_id(token)
        if found is None:
            raise ValueError(f"ClapTokenizer: the vocabulary has no {token!r}; not a RoBERTa tokenizer "
                             f"({', '.join(self.files.values()) or 'given tokenizer'})")
        return int(found)

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, max_length: int = 77) -> "ClapTokenizer":
        from tokenizers import Tokenizer
        from tokenizers.models import BPE
        from tokenizers.pre_tokenizers import ByteLevel
        from tokenizers.decoders import ByteLevel as ByteLevelDecoder
        directory = os.fspath(directory)
        vocab, merges = paths.join(directory, VOCAB_FILE), paths.join(directory, MERGES_FILE)
        if paths.isfile(vocab) and paths.isfile(merges):
            local_vocab, local_merges = paths.local_copy(vocab), paths.local_copy(merges)
            tokenizer = Tokenizer(BPE.from_file(local_vocab, local_merges))
            tokenizer.pre_tokenizer = ByteLevel(add_prefix_space=False)
            tokenizer.decoder = ByteLevelDecoder()
            files = {VOCAB_FILE: vocab, MERGES_FILE: merges}
        elif paths.isfile(paths.join(directory, TOKENIZER_FILE)):
            file = paths.join(directory, TOKENIZER_FILE)
            tokenizer = Tokenizer.from_str(paths.read_text(file))
            tokenizer.no_padding()
            tokenizer.no_truncation()
            tokenizer.post_processor = None
            files = {TOKENIZER_FILE: file}
        else:
            raise FileNotFoundError(f"{directory}: no RoBERTa tokenizer; expected {VOCAB_FILE} + {MERGES_FILE} or "
                                    f"{TOKENIZER_FILE} (a Hugging Face roberta-base / CLAP directory)")
        for token in (BOS, PAD, EOS, "<unk>", "<mask>"):  # matched whole inside prompts, as the reference does
            if tokenizer.token_to_id(token) is not None:
                from tokenizers import AddedToken
                tokenizer.add_special_tokens([AddedToken(token, lstrip=token == "<mask>", normalized=False)])
        return cls(tokenizer, max_length, files)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def tokenize_with_info(self, prompts: str | Sequence[str]) -> TokenizedPrompts:
        prompts = _as_prompt_list(prompts)
        encoded = self.tokenizer.encode_batch(prompts, add_special_tokens=False)
        batch = len(prompts)
        ids = np.full((batch, self.max_length), self.pad_id, np.int32)
        mask = np.zeros((batch, self.max_length), bool)
        num_tokens = np.array([len(e.ids) + 2 for e in encoded])
        for i, e in enumerate(encoded):
            row = [self.bos_id, *e.ids[: self.max_length - 2], self.eos_id]
            ids[i, : len(row)] = row
            mask[i, : len(row)] = True
        return TokenizedPrompts(ids, mask, num_tokens, flag_truncated("ClapTokenizer", num_tokens, self.max_length))

    def __call__(self, prompts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        out = self.tokenize_with_info(prompts)
        return out.ids, out.mask
