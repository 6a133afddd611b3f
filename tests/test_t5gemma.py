"""Stable Audio 3's text encoder: our T5Gemma encoder against ``transformers.T5GemmaEncoderModel`` on a small random
config saved as a Hugging Face directory (grouped-query heads, a sliding window shorter than the prompt, a soft cap
that bites, padding), and the converter's errors."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stableaudio_jax.convert.state_dict import CheckpointMismatchError
from stableaudio_jax.convert.t5gemma import (load_hf_t5gemma, t5gemma_config_from_hf,
                                             t5gemma_params_from_state_dict)
from stableaudio_jax.models.t5gemma import T5GemmaEncoder
from helpers import gemma_style_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.parity

SMALL = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=3,
             attn_logit_softcapping=2.0, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A random ``T5GemmaEncoderModel`` saved with ``save_pretrained``, and its outputs on a padded batch. Norm
    weights are randomised (they start at zero) and q/k scaled up, so that scores reach the soft cap."""
    config = transformers.T5GemmaConfig(encoder=SMALL, decoder=SMALL, is_encoder_decoder=False,
                                        attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.T5GemmaEncoderModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "q_proj" in name or "k_proj" in name:
                p.normal_(0.0, 0.5)
    directory = tmp_path_factory.mktemp("t5gemma")
    model.save_pretrained(directory)
    ids = np.random.default_rng(0).integers(3, SMALL["vocab_size"], (2, 10))
    mask = np.ones((2, 10), bool)
    mask[1, 6:] = False
    ids[1, 6:] = 0
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask.astype(np.int64)))
    return directory, model, ids, mask, out.last_hidden_state.numpy()


def test_the_encoder_matches_transformers(reference):
    directory, _, ids, mask, expected = reference
    module, variables = load_hf_t5gemma(directory)
    assert (module.num_kv_heads, module.sliding_window, module.attn_logit_softcap) == (2, 3, 2.0)
    got = np.asarray(jax.jit(module.apply)(variables, jnp.asarray(ids), jnp.asarray(mask)))
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got[1, :6], expected[1, :6], atol=1e-5, rtol=1e-5)  # padded rows: not compared


def test_each_option_the_parity_rests_on_changes_the_output(reference):
    """The window, the soft cap and the key padding each change the result here: the parity above covers them."""
    directory, _, ids, mask, _ = reference
    module, variables = load_hf_t5gemma(directory)
    base = np.asarray(module.apply(variables, ids, mask))[0]
    for change in (dict(sliding_window=None), dict(attn_logit_softcap=None)):
        assert not np.allclose(np.asarray(module.clone(**change).apply(variables, ids, mask))[0], base, atol=1e-3)
    unpadded = np.asarray(module.apply(variables, ids, np.ones_like(mask)))
    assert not np.allclose(unpadded[1, :6], np.asarray(module.apply(variables, ids, mask))[1, :6], atol=1e-3)


def test_a_whole_encoder_decoder_state_dict_loads_its_encoder(reference):
    directory, model, ids, mask, expected = reference
    module, variables = load_hf_t5gemma(directory)
    whole = {f"model.{k}": v.numpy() for k, v in model.state_dict().items()}
    whole["model.decoder.layers.0.self_attn.q_proj.weight"] = np.zeros((4, 4), np.float32)  # skipped
    again = t5gemma_params_from_state_dict(whole, module)
    jax.tree_util.tree_map(np.testing.assert_array_equal, again, variables)


def test_a_missing_tensor_or_a_wrong_config_is_named(reference, tmp_path):
    directory, model, *_ = reference
    module, _ = load_hf_t5gemma(directory)
    state = {k: v.numpy() for k, v in model.state_dict().items() if "layers.2.mlp.up_proj" not in k}
    with pytest.raises(CheckpointMismatchError, match=r"encoder\.layers\.2\.mlp\.up_proj\.weight"):
        t5gemma_params_from_state_dict(state, module)
    with pytest.raises(ValueError, match=r"x\.json: no 'encoder' section; .*model_type 't5'"):
        t5gemma_config_from_hf({"model_type": "t5", "d_model": 8}, "x.json")
    with pytest.raises(FileNotFoundError, match="no config.json; expected a Hugging Face T5Gemma"):
        load_hf_t5gemma(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    assert t5gemma_config_from_hf(config).rope_theta == 10000.0
    with pytest.raises(ValueError, match=r"layer_types is \('full_attention',\): expected 3 entries"):
        T5GemmaEncoder(vocab_size=8, d_model=8, num_layers=3, num_heads=2, num_kv_heads=2, head_dim=4,
                       layer_types=("full_attention",)).init(jax.random.key(0), jnp.zeros((1, 4), int),
                                                             jnp.ones((1, 4), bool))


@pytest.mark.parametrize("config", [{}, {"padding_side": "right"}, {"padding_side": "right", "add_eos_token": False,
                                                                   "truncation_side": "left"}],
                         ids=["class default", "right", "left truncation"])
def test_the_tokenizer_gives_the_ids_and_mask_auto_tokenizer_gives(tmp_path, config):
    """As the reference conditioner calls it: padding to max_length, truncation on, an empty prompt, a prompt
    longer than max_length, a character outside the vocabulary (byte fallback)."""
    from stableaudio_jax.store.hf_tokenizer import HFTokenizer
    gemma_style_tokenizer(tmp_path, config)
    prompts = ["a happy piece for flute at 87 BPM", "", "slow " * 12, "piano ♪ at 60 BPM"]
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
    expected = reference(prompts, truncation=True, max_length=16, padding="max_length")
    ours = HFTokenizer.from_directory(tmp_path, max_length=16).tokenize_with_info(prompts)
    np.testing.assert_array_equal(ours.ids, np.array(expected["input_ids"]))
    np.testing.assert_array_equal(ours.mask, np.array(expected["attention_mask"], bool))
    assert ours.truncated.tolist() == [False, False, True, False] and ours.num_tokens[2] == len(reference(prompts[2]).input_ids)
    assert ours.ids[1][ours.mask[1]].tolist() == [2, 1]  # an empty prompt is <bos><eos>


def test_a_tokenizer_directory_without_its_files_or_with_a_bad_side_is_named(tmp_path):
    from stableaudio_jax.store.hf_tokenizer import HFTokenizer
    with pytest.raises(FileNotFoundError, match="no tokenizer.json; expected a Hugging Face tokenizer directory"):
        HFTokenizer.from_directory(tmp_path)
    gemma_style_tokenizer(tmp_path, {"padding_side": "middle"})
    with pytest.raises(ValueError, match=r"tokenizer\.json: padding_side is 'middle'; expected 'left' or 'right'"):
        HFTokenizer.from_directory(tmp_path)
