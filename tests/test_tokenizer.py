"""T5 tokenisation rules (</s>, <pad>, truncation), sentencepiece training, and the errors users meet."""
import logging

import numpy as np
import pytest
import sentencepiece as spm

from stableaudio_jax.convert import load_hf_t5
from stableaudio_jax.store.tokenizers import EOS_ID, PAD_ID, T5Tokenizer, train_sentencepiece

CAPTIONS = ["a dog barking in the rain", "ambient synth pad with a slow attack", "techno drum loop at 128 bpm",
            "sad piano chords in a small room", "field recording of birds at dawn", "distorted electric guitar riff",
            "a crowd cheering in a stadium", "lofi hip hop beat with vinyl crackle"] * 8


@pytest.fixture(scope="module")
def spiece(tmp_path_factory):
    return train_sentencepiece(CAPTIONS, tmp_path_factory.mktemp("sp") / "spiece.model", vocab_size=120)


def test_trained_model_has_t5_special_ids(spiece):
    sp = spm.SentencePieceProcessor(model_file=spiece)
    assert sp.pad_id() == 0 and sp.eos_id() == 1 and sp.unk_id() == 2 and sp.bos_id() == -1
    assert sp.id_to_piece(1) == "</s>" and 20 < sp.get_piece_size() <= 120


def test_t5_rule_eos_then_pad(spiece):
    tok = T5Tokenizer(spiece, max_length=16)
    sp = spm.SentencePieceProcessor(model_file=spiece)
    ids, mask = tok(["a dog barking", "birds at dawn"])
    assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == mask.shape == (2, 16)
    for row, text in zip(range(2), ["a dog barking", "birds at dawn"]):
        pieces = sp.encode(text)
        n = len(pieces)
        assert list(ids[row, :n]) == pieces and ids[row, n] == EOS_ID and (ids[row, n + 1:] == PAD_ID).all()
        assert mask[row, : n + 1].all() and not mask[row, n + 1:].any()


def test_empty_prompt_is_just_eos(spiece):
    ids, mask = T5Tokenizer(spiece, max_length=8)([""])
    assert list(ids[0]) == [EOS_ID] + [PAD_ID] * 7 and list(mask[0]) == [True] + [False] * 7


def test_long_prompt_is_truncated_and_reported(spiece, caplog):
    tok = T5Tokenizer(spiece, max_length=6)
    long = "ambient synth pad with a slow attack and a crowd cheering"
    with caplog.at_level(logging.WARNING):
        info = tok.tokenize_with_info(["a dog", long])
    sp = spm.SentencePieceProcessor(model_file=spiece)
    assert list(info.ids[1]) == sp.encode(long)[:5] + [EOS_ID] and info.mask[1].all()
    assert list(info.truncated) == [False, True] and info.num_tokens[1] == len(sp.encode(long)) + 1
    assert "#1" in caplog.text and "truncated" in caplog.text


def test_bad_prompt_types(spiece):
    tok = T5Tokenizer(spiece)
    assert tok("a single string")[0].shape == (1, 128)
    with pytest.raises(TypeError, match=r"prompt #1 is a NoneType"):
        tok(["ok", None])
    with pytest.raises(ValueError, match="no prompts given"):
        tok([])


def test_missing_or_wrong_sentencepiece_model(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no spiece.model; .*spiece.model"):
        T5Tokenizer.from_directory(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        T5Tokenizer(tmp_path / "nope.model")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no spiece.model; the T5 tokenizer needs .*spiece.model"):
        load_hf_t5(tmp_path)
    # a sentencepiece model with default ids (<unk>=0, <s>=1, </s>=2) is not a T5 tokenizer
    import io
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CAPTIONS), model_writer=buf, vocab_size=60,
                                   hard_vocab_limit=False, minloglevel=2)
    (tmp_path / "plain.model").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="not a T5 sentencepiece model"):
        T5Tokenizer(tmp_path / "plain.model")
