"""CLAP's text branch against the PyTorch reference classes on small random configs (float32, max abs error
<= 1e-4): the layer features are what stable-audio-tools' CLAPTextConditioner takes
(``RobertaModel(...).hidden_states[-2]``), the global embedding what LAION's ``get_text_embedding`` returns
(``text_projection(pooler_output)``, L2-normalised), for the three weight layouts."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from stableaudio_jax.convert.clap import (LAYOUTS, clap_config_from_hf, clap_config_from_state_dict,
                                          clap_from_config, clap_params_from_state_dict, detect_layout)
from stableaudio_jax.convert.state_dict import CheckpointMismatchError

pytestmark = pytest.mark.parity


SMALL = dict(vocab_size=320, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=40, type_vocab_size=1, pad_token_id=1)


def _ids():
    """Two prompts padded to 12 tokens (<s>=0 ... </s>=2, then <pad>=1), as RoBERTa's tokenizer gives them."""
    rng = np.random.default_rng(0)
    ids = np.ones((2, 12), np.int64)
    for row, length in enumerate((12, 7)):
        ids[row, :length] = np.concatenate([[0], rng.integers(3, SMALL["vocab_size"], length - 2), [2]])
    return ids, ids != 1


def _laion_reference():
    """LAION CLAP's text tower: a RobertaModel and text_projection = Linear, ReLU, Linear."""
    from transformers import RobertaConfig, RobertaModel
    torch.manual_seed(0)
    branch = RobertaModel(RobertaConfig(**SMALL, layer_norm_eps=1e-5)).eval()
    projection = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16)).eval()
    return branch, projection


def _run_reference(branch, projection, ids, mask):
    with torch.no_grad():
        out = branch(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)),
                     output_hidden_states=True)
        embedding = torch.nn.functional.normalize(projection(out.pooler_output), dim=-1)
    return out.hidden_states, embedding.numpy()


def _ours(state, **config_kwargs):
    config = clap_config_from_state_dict(state, num_heads=4, **config_kwargs)
    module = clap_from_config(config)
    return module, clap_params_from_state_dict(state, module)


def _state(prefix_branch, prefix_projection, branch, projection, names=("0", "2")):
    state = {prefix_branch + k: v.numpy() for k, v in branch.state_dict().items()}
    for ours, theirs in zip(names, ("0", "2")):
        for leaf in ("weight", "bias"):
            state[f"{prefix_projection}{ours}.{leaf}"] = projection.state_dict()[f"{theirs}.{leaf}"].numpy()
    return state


@pytest.mark.parametrize("layout", ["laion", "stable-audio-tools"])
def test_laion_and_finetuned_checkpoints_match_the_reference(layout):
    branch, projection = _laion_reference()
    branch_prefix, projection_prefix, _ = LAYOUTS[layout]
    state = _state(branch_prefix, projection_prefix, branch, projection)
    state[f"{branch_prefix.replace('text_branch', 'audio_branch')}spectrogram.weight"] = np.zeros(3)  # ignored
    assert detect_layout(state) == layout
    ids, mask = _ids()
    hidden, embedding = _run_reference(branch, projection, ids, mask)
    module, params = _ours(state)
    for layer in (-2, -1, 0):
        features, ours_embedding = module.apply(params, jnp.asarray(ids), jnp.asarray(mask), layer=layer)
        assert np.abs(np.asarray(features) - hidden[layer].numpy()).max() <= 1e-4, layer
    assert np.abs(np.asarray(ours_embedding) - embedding).max() <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(np.asarray(ours_embedding), axis=-1), 1.0, atol=1e-5)


def test_hugging_face_clap_text_model_with_projection_matches():
    from transformers import ClapTextConfig, ClapTextModelWithProjection
    torch.manual_seed(1)
    config = ClapTextConfig(**SMALL, projection_dim=16)
    reference = ClapTextModelWithProjection(config).eval()
    ids, mask = _ids()
    with torch.no_grad():
        out = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)),
                        output_hidden_states=True)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    assert detect_layout(state) == "hugging-face"
    ours_config = clap_config_from_hf(config.to_dict())
    assert ours_config.to_dict() == dict(clap_config_from_state_dict(state, num_heads=4, layer_norm_eps=1e-12),
                                         pad_id=1)
    module = clap_from_config(ours_config)
    features, embedding = module.apply(clap_params_from_state_dict(state, module), jnp.asarray(ids),
                                       jnp.asarray(mask))
    assert np.abs(np.asarray(features) - out.hidden_states[-2].numpy()).max() <= 1e-4
    expected = torch.nn.functional.normalize(out.text_embeds, dim=-1).numpy()
    assert np.abs(np.asarray(embedding) - expected).max() <= 1e-4


def test_a_checkpoint_missing_text_weights_lists_them():
    branch, projection = _laion_reference()
    state = _state("module.text_branch.", "module.text_projection.", branch, projection)
    del state["module.text_branch.encoder.layer.1.output.dense.weight"]
    del state["module.text_projection.2.bias"]
    module = clap_from_config(clap_config_from_state_dict(state, num_heads=4))
    with pytest.raises(CheckpointMismatchError) as e:
        clap_params_from_state_dict(state, module)
    assert e.value.missing == ["module.text_branch.encoder.layer.1.output.dense.weight",
                               "module.text_projection.2.bias"]
    with pytest.raises(ValueError, match="no CLAP text branch"):
        detect_layout({"model.x": np.zeros(1)})


def test_a_hidden_layer_outside_the_model_is_refused():
    branch, projection = _laion_reference()
    module, params = _ours(_state("module.text_branch.", "module.text_projection.", branch, projection))
    ids, mask = _ids()
    with pytest.raises(ValueError, match="layer 5 is outside the 4 hidden states"):
        module.apply(params, jnp.asarray(ids), jnp.asarray(mask), layer=5)


def _roberta_vocab(root):
    """A byte-level BPE vocabulary in roberta-base's file layout (vocab.json + merges.txt), <s>=0 <pad>=1 </s>=2."""
    from tokenizers import ByteLevelBPETokenizer
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(["a dog barking", "rain on a tin roof", "soft piano chords"] * 10, vocab_size=300,
                                min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    root.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(root))
    return root


def test_a_laion_checkpoint_loads_stores_and_reloads(tmp_path):
    """``load_clap`` on a LAION ``.pt`` (+ a roberta tokenizer folder) → the bound conditioner; the model store keeps
    it with its tokenizer files and gives back the same features."""
    from stableaudio_jax.convert import load_clap
    from stableaudio_jax.store import load_text_encoder, save_text_encoder
    branch, projection = _laion_reference()
    state = _state("module.text_branch.", "module.text_projection.", branch, projection)
    torch.save({"epoch": 3, "state_dict": {k: torch.from_numpy(v) for k, v in state.items()}}, tmp_path / "clap.pt")
    vocab = _roberta_vocab(tmp_path / "roberta")
    with pytest.raises(ValueError, match="carries no tokenizer"):
        load_clap(tmp_path / "clap.pt", num_heads=4)
    text = load_clap(tmp_path / "clap.pt", vocab, num_heads=4)
    prompts = ["a dog barking", "rain on a tin roof, twice as loud"]
    features, mask = text(prompts)
    ids, _ = text.tokenize(prompts)
    hidden, _ = _run_reference(branch, projection, ids, mask)
    assert features.shape == (2, 77, 32) and text.width == 32 and text.output_length == 77
    assert np.abs(np.asarray(features) - hidden[-2].numpy()).max() <= 1e-4
    assert np.asarray(features)[1, ~mask[1]].std() > 0  # padded positions are passed on, not zeroed
    save_text_encoder(tmp_path / "stored", text)
    again = load_text_encoder(tmp_path / "stored")
    assert sorted(p.name for p in (tmp_path / "stored").iterdir()) == ["merges.txt", "stableaudio_jax.json",
                                                                        "vocab.json", "weights.safetensors"]
    np.testing.assert_array_equal(np.asarray(again(prompts)[0]), np.asarray(features))
    pooled = again.__class__(again.module, again.params, again.tokenizer, output="embedding")
    embedding, pooled_mask = pooled(prompts)
    assert embedding.shape == (2, 1, 16) and pooled_mask.shape == (2, 1) and pooled_mask.all()
    np.testing.assert_allclose(np.linalg.norm(np.asarray(embedding)[:, 0], axis=-1), 1.0, atol=1e-5)


def test_a_hugging_face_clap_directory_is_a_text_encoder(tmp_path):
    from transformers import ClapTextConfig, ClapTextModelWithProjection

    from stableaudio_jax.training.sources import resolve_text_encoder
    torch.manual_seed(2)
    reference = ClapTextModelWithProjection(ClapTextConfig(**SMALL, projection_dim=16)).eval()
    reference.save_pretrained(tmp_path / "hf")
    _roberta_vocab(tmp_path / "hf")
    text = resolve_text_encoder(tmp_path / "hf")
    ids, mask = text.tokenize(["soft piano chords", ""])
    with torch.no_grad():
        out = reference(input_ids=torch.tensor(ids.astype(np.int64)),
                        attention_mask=torch.tensor(mask.astype(np.int64)), output_hidden_states=True)
    assert text.config["type"] == "clap" and text.config["layer"] == -2
    assert np.abs(np.asarray(text.encode(ids, mask)) - out.hidden_states[-2].numpy()).max() <= 1e-4
