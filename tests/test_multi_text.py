"""T5 and CLAP together (two text conditioners, stable-audio-tools' multi-conditioner): one feature sequence
[t5 | clap] zero-padded to the widest part, stored with its parts as components, and a diffusion model that
projects each part with its own proj_out, which is what the reference computes."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import roberta_vocab

from stableaudio_jax.config_loader import load_config
from stableaudio_jax.models.clap import ClapTextEncoder
from stableaudio_jax.models.t5 import T5Encoder
from stableaudio_jax.store import (StoreError, T5TextEncoder, count_parameters, load_text_encoder, read_info,
                                   resolve_conditioning, save_text_encoder)
from stableaudio_jax.store.builders import diffusion_model_from_config
from stableaudio_jax.store.clap_text import ClapText
from stableaudio_jax.store.clap_tokenizer import ClapTokenizer
from stableaudio_jax.store.multi_text import MultiText
from stableaudio_jax.store.tokenizers import T5Tokenizer, train_sentencepiece
from stableaudio_jax.training.latent_source import check_data_fits

PROMPTS = ["a dog barking", "rain on a tin roof", ""]


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """A tiny T5 (32 wide, 8 tokens) and a tiny CLAP (24 wide, 6 tokens) with random weights."""
    root = tmp_path_factory.mktemp("multi")
    t5 = T5Encoder(**load_config("configs/t5.py:tiny").model)
    spiece = train_sentencepiece(PROMPTS[:2] * 20, root / "spiece.model", vocab_size=40)
    t5_params = t5.init(jax.random.key(1), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), bool))
    clap = ClapTextEncoder(vocab_size=300, width=24, num_layers=2, num_heads=4, intermediate_size=48,
                           max_positions=16, projection_dim=8)
    clap_params = clap.init(jax.random.key(2), jnp.zeros((1, 6), jnp.int32), jnp.ones((1, 6), bool))
    tokenizer = ClapTokenizer.from_directory(roberta_vocab(root / "bpe"), 6)
    return root, MultiText([("t5", T5TextEncoder(t5, t5_params, T5Tokenizer(spiece, 8), 8, "tiny t5")),
                            ("clap", ClapText(clap, clap_params, tokenizer, 6, source="tiny clap"))])


def test_features_are_the_parts_in_sequence_padded_to_the_widest(multi):
    _, text = multi
    features, mask = text(PROMPTS)
    t5_features, t5_mask = text.parts[0][1](PROMPTS)
    clap_features, clap_mask = text.parts[1][1](PROMPTS)
    assert features.shape == (3, 14, 32) and text.width == 32 and text.output_length == 14
    np.testing.assert_array_equal(features[:, :8], t5_features)
    np.testing.assert_array_equal(features[:, 8:, :24], clap_features)
    assert not np.asarray(features[:, 8:, 24:]).any()
    np.testing.assert_array_equal(mask, np.concatenate([t5_mask, clap_mask], 1))
    batch, batch_mask = text.embed_prompts(PROMPTS, batch_size=2)  # the pre-encoder's path: same features
    np.testing.assert_allclose(batch, features, atol=1e-6)
    np.testing.assert_array_equal(batch_mask, mask)


def test_stored_with_its_parts_as_components(multi, tmp_path):
    _, text = multi
    path = save_text_encoder(tmp_path / "text", text)
    info = read_info(path)
    assert info.config.type == "multi" and sorted(info.components) == ["clap", "t5"]
    assert info.weights_sha256 == text.sha256  # what pre-encoded data records is what the store records
    loaded = load_text_encoder(path)
    assert isinstance(loaded, MultiText) and [n for n, _ in loaded.parts] == ["t5", "clap"]
    np.testing.assert_array_equal(loaded(PROMPTS)[0], text(PROMPTS)[0])
    with pytest.raises(StoreError, match="keeps its parts' token counts"):
        load_text_encoder(path, max_length=5)
    with pytest.raises(ValueError, match="distinct ids"):
        MultiText([("t5", text.parts[0][1]), ("t5", text.parts[1][1])])


def test_each_part_projected_by_its_own_proj_out_as_the_reference(multi):
    """[proj_t5(t5) * mask | proj_clap(clap) | start | total]: each part keeps its own width and masking rule."""
    _, text = multi
    config = load_config("configs/dit.py:tiny+clap")
    section = text.conditioning_config()
    section["parts"] = {name: dict(part, project_out=True) for name, part in section["parts"].items()}
    config.conditioning.text = ml_collections.ConfigDict(section)
    config = resolve_conditioning(config)
    assert config.conditioning.text.width == 32 and config.conditioning.text.max_length == 14
    model = diffusion_model_from_config(config)
    features, mask = text(PROMPTS)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((3, 8, 4)), features, mask))
    assert sorted(params["text_projection"]) == ["clap", "t5"]
    cond = model.condition(params, features, mask, jnp.zeros(3), jnp.full(3, 2.0))["cross_attn_cond"]

    def proj(name, x):
        p = params["text_projection"][name]["params"]["proj"]
        return x @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
    t5_features, t5_mask = text.parts[0][1](PROMPTS)
    clap_features, _ = text.parts[1][1](PROMPTS)
    np.testing.assert_allclose(cond[:, :8], proj("t5", np.asarray(t5_features)) * t5_mask[..., None], atol=1e-5)
    np.testing.assert_allclose(cond[:, 8:14], proj("clap", np.asarray(clap_features)), atol=1e-5)  # not zeroed
    assert cond.shape == (3, 16, 32)


def test_full_size_config_and_its_parameter_count():
    """sao+clap: SAO's DiT reading 128 T5 + 77 CLAP tokens of 768 (no projection needed: both are cond_dim)."""
    sao, both = load_config("configs/dit.py:sao"), load_config("configs/dit.py:sao+clap")
    assert count_parameters(both) == count_parameters(sao)
    resolved = resolve_conditioning(both)
    assert resolved.conditioning.text.max_length == 128 + 77 and resolved.conditioning.text.width == 768
    with pytest.raises(ValueError, match="the only addition is '\\+clap'"):
        load_config("configs/dit.py:sao+t5")


def test_training_refuses_data_of_other_parts():
    config = load_config("configs/dit.py:tiny+clap")
    parts = {"clap": {"type": "clap", "model": {}, "max_length": 6}, "t5": {"type": "t5", "model": {}, "max_length": 8}}
    manifest = {"text": "embeddings", "text_dim": 32, "latent_channels": 4, "encoder_config": {"text": {
        "type": "multi", "model": {"order": ["clap", "t5"], "parts": parts}}}}
    with pytest.raises(ValueError, match=r"encoded by the parts \[\('clap', 'clap'\), \('t5', 't5'\)\]"):
        check_data_fits(manifest, config, "/data")
    config.conditioning.text = {"type": "t5"}
    with pytest.raises(ValueError, match="encoded by a 'multi' text encoder"):
        check_data_fits(manifest, config, "/data")
