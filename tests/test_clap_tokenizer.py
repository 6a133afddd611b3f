"""CLAP tokenisation (RoBERTa byte-level BPE via ``tokenizers``) against the reference tokenizer LAION CLAP uses
(``transformers.RobertaTokenizer`` with padding="max_length", truncation=True, max_length=77): identical ids and
masks on varied prompts, from a vocabulary trained here (roberta-base's own files are not downloadable offline)."""
import numpy as np
import pytest

from stableaudio_jax.store.clap_tokenizer import ClapTokenizer

PROMPTS = [
    "", " ", "a dog barking", "A dog barking.", "  leading and trailing spaces  ", "rain on a tin roof, 120 BPM",
    "Café au lait — ambient piano, déjà vu", "日本の祭りの太鼓と笛", "emoji 🎸🥁🎹 jam", "tabs\tand\nnewlines",
    "UPPER lower MiXeD", "numbers 3.14159 2e-5 1/4 note", "punctuation!!! ??? ... ;;; ---", "ünïcödé ñ ß ø å",
    "Ελληνική μουσική με λύρα", "музыка для медитации", "a " * 200, "very long " + "synth pad " * 60,
    "a prompt with <s> and </s> inside", "<mask> sound", "https://example.com/sample.wav?x=1&y=2",
    "don't won't can't it's", "8-bit chiptune arpeggio, square wave", "\u200bzero width\u200b space",
]


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    from tokenizers import ByteLevelBPETokenizer
    root = tmp_path_factory.mktemp("roberta_vocab")
    trainer = ByteLevelBPETokenizer()
    corpus = [p for p in PROMPTS if p.strip()] * 3 + ["the quick brown fox jumps over the lazy dog"] * 5
    trainer.train_from_iterator(corpus, vocab_size=400, min_frequency=1,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    trainer.save_model(str(root))
    return root


def test_ids_and_masks_match_the_reference_tokenizer(vocab_dir):
    from transformers import RobertaTokenizer
    reference = RobertaTokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"))
    expected = reference(PROMPTS, padding="max_length", truncation=True, max_length=77, return_tensors="np")
    ours = ClapTokenizer.from_directory(vocab_dir)
    ids, mask = ours(PROMPTS)
    assert len(PROMPTS) >= 20 and ids.shape == (len(PROMPTS), 77)
    for i, prompt in enumerate(PROMPTS):
        np.testing.assert_array_equal(ids[i], expected["input_ids"][i], err_msg=repr(prompt))
        np.testing.assert_array_equal(mask[i], expected["attention_mask"][i].astype(bool), err_msg=repr(prompt))
    info = ours.tokenize_with_info(PROMPTS)
    assert info.truncated.tolist() == [n > 77 for n in info.num_tokens] and info.truncated.sum() >= 2


def test_a_tokenizer_json_gives_the_same_ids(vocab_dir, tmp_path):
    """Hub directories often ship only ``tokenizer.json`` (the ``tokenizers`` serialisation, with RoBERTa's
    post-processor, padding and truncation settings, which are ignored: the rule is ours)."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    fast = ByteLevelBPETokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"))
    fast.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast.enable_truncation(512)
    fast.save(str(tmp_path / "tokenizer.json"))
    from_json = ClapTokenizer.from_directory(tmp_path)(PROMPTS)
    from_files = ClapTokenizer.from_directory(vocab_dir)(PROMPTS)
    np.testing.assert_array_equal(from_json[0], from_files[0])
    np.testing.assert_array_equal(from_json[1], from_files[1])


def test_a_folder_without_a_tokenizer_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no RoBERTa tokenizer; expected vocab.json"):
        ClapTokenizer.from_directory(tmp_path)
    with pytest.raises(ValueError, match="max_length is 1"):
        ClapTokenizer(None, max_length=1)
