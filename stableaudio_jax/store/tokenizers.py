"""T5 tokenisation with sentencepiece, and training a small T5-compatible sentencepiece model from captions.

T5's rule (what Hugging Face's T5 tokenizers produce with ``padding="max_length", truncation=True``): the
sentencepiece ids of the prompt, truncated to ``max_length - 1``, then ``</s>`` (id 1), then ``<pad>`` (id 0) up to
``max_length``. The mask is True for the prompt tokens and ``</s>``. An empty prompt is valid and gives ``[</s>]``
(the reference does the same). Truncation is reported: :meth:`T5Tokenizer.tokenize_with_info` returns the untruncated
lengths, and a warning names the prompts that were cut.
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from stableaudio_jax import paths

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
SPIECE_FILE = "spiece.model"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizedPrompts:
    ids: np.ndarray        # [B, max_length] int32
    mask: np.ndarray       # [B, max_length] bool: prompt tokens and </s>
    num_tokens: np.ndarray  # [B] int: tokens the prompt needs (with </s>) before truncation
    truncated: np.ndarray  # [B] bool


def _as_prompt_list(prompts: str | Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("tokenize: no prompts given; expected a non-empty list of strings")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"tokenize: prompt #{i} is a {type(prompt).__name__} ({prompt!r}); expected str")
    return prompts


def flag_truncated(who: str, num_tokens: np.ndarray, max_length: int) -> np.ndarray:
    """Which prompts needed more than ``max_length`` tokens; logs a warning naming them."""
    truncated = num_tokens > max_length
    if truncated.any():
        cut = [f"#{i} ({num_tokens[i]} tokens)" for i in np.flatnonzero(truncated)]
        logger.warning("%s: prompts %s are longer than max_length %d and were truncated", who, ", ".join(cut),
                       max_length)
    return truncated


class T5Tokenizer:
    """sentencepiece → T5 ids with T5's ``</s>`` / ``<pad>`` convention, fixed length ``max_length``."""

    def __init__(self, model_file: str | os.PathLike, max_length: int = 128):
        model_file = os.fspath(model_file)
        if not paths.isfile(model_file):
            raise FileNotFoundError(f"sentencepiece model {model_file!r} does not exist; a T5 checkpoint directory "
                                    f"ships it as {SPIECE_FILE}")
        if max_length < 1:
            raise ValueError(f"T5Tokenizer: max_length is {max_length}; expected >= 1")
        self.model_file = model_file
        self.max_length = max_length
        self.processor = spm.SentencePieceProcessor(model_proto=paths.read_bytes(model_file))
        if self.processor.piece_to_id("</s>") != EOS_ID or self.processor.pad_id() not in (PAD_ID, -1):
            raise ValueError(f"{model_file}: not a T5 sentencepiece model (expected <pad>=0, </s>=1; got "
                             f"</s>={self.processor.piece_to_id('</s>')}, pad={self.processor.pad_id()})")

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, max_length: int = 128) -> "T5Tokenizer":
        path = paths.join(os.fspath(directory), SPIECE_FILE)
        if not paths.isfile(path):
            raise FileNotFoundError(f"{os.fspath(directory)}: no {SPIECE_FILE}; a T5 checkpoint directory must "
                                    f"contain the sentencepiece model as {path}")
        return cls(path, max_length)

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def tokenize_with_info(self, prompts: str | Sequence[str]) -> TokenizedPrompts:
        prompts = _as_prompt_list(prompts)
        pieces = self.processor.encode(prompts)
        batch = len(prompts)
        ids = np.full((batch, self.max_length), PAD_ID, np.int32)
        mask = np.zeros((batch, self.max_length), bool)
        num_tokens = np.array([len(p) + 1 for p in pieces])
        for i, row in enumerate(pieces):
            row = row[: self.max_length - 1] + [EOS_ID]
            ids[i, : len(row)] = row
            mask[i, : len(row)] = True
        return TokenizedPrompts(ids, mask, num_tokens, flag_truncated("T5Tokenizer", num_tokens, self.max_length))

    def __call__(self, prompts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids [B, max_length] int32, mask [B, max_length] bool)."""
        out = self.tokenize_with_info(prompts)
        return out.ids, out.mask


def train_sentencepiece(captions: Iterable[str], output_file: str | os.PathLike, vocab_size: int = 512,
                        model_type: str = "unigram") -> str:
    """Trains a T5-compatible sentencepiece model (<pad>=0, </s>=1, <unk>=2, no <s>) on ``captions``.

    For tests and for training a text encoder from scratch; ``vocab_size`` is an upper bound (small corpora give
    fewer pieces). Returns the written file's path.
    """
    captions = [c for c in captions if c and c.strip()]
    if not captions:
        raise ValueError("train_sentencepiece: no non-empty captions to train on")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(captions), model_writer=model, vocab_size=vocab_size, model_type=model_type,
        pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1, pad_piece="<pad>", eos_piece="</s>",
        unk_piece="<unk>", hard_vocab_limit=False, character_coverage=1.0, num_threads=1,
        minloglevel=2)
    output_file = paths.absolute(output_file)
    paths.makedirs(os.path.dirname(output_file))
    paths.write_bytes_atomic(output_file, model.getvalue())
    return output_file
