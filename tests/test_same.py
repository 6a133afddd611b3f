"""Stable Audio 3's SAME autoencoders against the reference code: tests/data/same_reference.npz holds two small
random configurations built from it (benchmarks/make_same_reference.py: SAME-S shaped, chunked attention with the
midpoint shift and a kernel-3 decoder mapping; SAME-L shaped, sliding-window attention and sinusoidal decoder
blocks), their weights, an input that needs padding, and the reference's latents and decoded audio."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stableaudio_jax.convert.same import same_params_from_state_dict
from stableaudio_jax.convert.state_dict import CheckpointMismatchError
from stableaudio_jax.models import same

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "same_reference.npz")


@pytest.fixture(scope="module")
def reference():
    data = np.load(FIXTURE)
    return data, json.loads(str(data["configs"]))["configs"]


def _ours(config: dict) -> same.SAMEAutoencoder:
    return same.SAMEAutoencoder(
        audio_channels=2, patch_size=config["patch_size"], width=config["channels"] * config["c_mults"][0],
        latent_dim=config["latent_dim"], stride=config["strides"][0], encoder_depth=config["transformer_depths"][0],
        decoder_depth=config["transformer_depths"][0], head_dim=config["dim_heads"],
        chunk_size=config.get("chunk_size", 32), midpoint_shift=config.get("chunk_midpoint_shift", False),
        sliding_window=(config["sliding_window"][0] if "sliding_window" in config else None),
        decoder_sinusoidal_blocks=config["decoder"]["sinusoidal_blocks"][0], decoder_mask_noise=0.0,
        encoder_conv_mapping=config["encoder"]["conv_mapping"], decoder_conv_mapping=config["decoder"]["conv_mapping"])


def _state(data, name):
    prefix = f"{name}/state/"
    return {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}


@pytest.mark.parametrize("name", ["s", "l"], ids=["SAME-S shaped", "SAME-L shaped"])
def test_encode_and_decode_match_the_reference(reference, name):
    data, configs = reference
    model = _ours(configs[name])
    variables = same_params_from_state_dict(_state(data, name), model)
    audio = jnp.asarray(data[f"{name}/audio"]).transpose(0, 2, 1)
    latents = jax.jit(lambda v, a: model.apply(v, a, method="encode"))(variables, audio)
    np.testing.assert_allclose(np.asarray(latents), data[f"{name}/latents"].transpose(0, 2, 1), atol=1e-4, rtol=1e-4)
    decoded = jax.jit(lambda v, z: model.apply(v, z, method="decode"))(variables, jnp.asarray(latents))
    np.testing.assert_allclose(np.asarray(decoded), data[f"{name}/decoded"].transpose(0, 2, 1), atol=1e-4,
                               rtol=1e-4)


def test_the_options_the_parity_rests_on_each_change_the_output(reference):
    """Without the midpoint shift, the window or the sinusoidal blocks the same weights give other outputs: the
    parity above tests each of them."""
    data, configs = reference
    for name, change in (("s", dict(midpoint_shift=False)), ("l", dict(sliding_window=2)),
                         ("l", dict(decoder_sinusoidal_blocks=0))):
        model = _ours(configs[name])
        variables = same_params_from_state_dict(_state(data, name), model)
        audio = jnp.asarray(data[f"{name}/audio"]).transpose(0, 2, 1)
        base = model.apply(variables, audio)
        assert not np.allclose(model.clone(**change).apply(variables, audio), base, atol=1e-3), change


def test_decode_noise_is_the_references_and_only_with_a_key(reference):
    """With a ``noise`` key the decoder adds what the reference adds at inference (N(0, 0.01^2) on the new tokens,
    N(0, (1e-3 running_std)^2) on the latents); without one it is deterministic."""
    data, configs = reference
    model = _ours(configs["s"]).clone(decoder_mask_noise=0.01)
    variables = same_params_from_state_dict(_state(data, "s"), model)
    latents = jnp.asarray(data["s/latents"]).transpose(0, 2, 1)
    quiet = model.apply(variables, latents, method="decode")
    np.testing.assert_array_equal(quiet, model.apply(variables, latents, method="decode"))
    noisy = [model.apply(variables, latents, jax.random.key(i), method="decode") for i in range(2)]
    assert not np.allclose(noisy[0], noisy[1]) and not np.allclose(noisy[0], quiet)


def test_a_missing_tensor_is_named_and_an_sa3_checkpoint_prefix_is_read(reference):
    data, configs = reference
    model = _ours(configs["s"])
    state = _state(data, "s")
    variables = same_params_from_state_dict({f"pretransform.model.{k}": v for k, v in state.items()}, model)
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, same_params_from_state_dict(state, model))
    del state["decoder.layers.3.transformers.1.self_attn.to_qkv.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"decoder\.layers\.3\.transformers\.1\.self_attn\.to_qkv"):
        same_params_from_state_dict(state, model)
    with pytest.raises(ValueError, match=r"audio has shape \(1, 100\); expected \[batch, samples, 2\]"):
        model.apply(variables, jnp.zeros((1, 100)), method="encode")


@pytest.mark.parametrize("name, overlap", [("s", 6), ("l", 5)], ids=["SAME-S shaped", "SAME-L shaped"])
def test_chunked_encode_and_decode_equal_the_whole_pass(reference, name, overlap):
    """Long audio in windows (here 4 latents plus the overlap either side, the receptive field's bound), one
    window at a time: the same latents and audio as one pass over everything, ends included."""
    data, configs = reference
    model = _ours(configs[name])
    variables = same_params_from_state_dict(_state(data, name), model)
    audio = jax.random.normal(jax.random.key(1), (1, 40 * model.downsampling_ratio - 5, 2))
    whole = model.apply(variables, audio, method="encode")
    chunked = jax.jit(lambda a: same.chunked_encode(model, variables, a, chunk_size=4, overlap=overlap))(audio)
    np.testing.assert_allclose(chunked, whole, atol=1e-4, rtol=1e-4)
    decoded = jax.jit(lambda z: same.chunked_decode(model, variables, z, chunk_size=4, overlap=overlap))(whole)
    np.testing.assert_allclose(decoded, model.apply(variables, whole, method="decode"), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=f"overlap {overlap - 2} latent frames is below the receptive field"):
        same.chunked_encode(model, variables, audio, chunk_size=4, overlap=overlap - 2)


@pytest.mark.parametrize("variant, tensors, parameters", [("s", 244, 108_244_529), ("l", 472, 852_127_073)])
def test_full_size_configs_hold_the_reference_checkpoints_tensors(variant, tensors, parameters):
    """configs/same.py at full size (shapes only): one parameter per reference tensor except each block's rotary
    buffer and the empty noise_scaling_factor (SAME-S 244 and SAME-L 472 tensors in the reference layout)."""
    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.convert.same import _key
    config = dict(load_config(f"configs/same.py:{variant}").model)
    assert (config.pop("type"), config.pop("sample_rate")) == ("same", 44100)
    model = same.SAMEAutoencoder(**config)
    abstract = jax.eval_shape(lambda a: model.init(jax.random.key(0), a),
                              jax.ShapeDtypeStruct((1, 2 * model.downsampling_ratio, 2), jnp.float32))["params"]
    flat = jax.tree_util.tree_flatten_with_path(nn.unbox(abstract))[0]
    keys = {_key(tuple(str(getattr(k, "key", k)) for k in path)) for path, _ in flat}
    blocks = model.encoder_depth + model.decoder_depth
    assert len(keys) == len(flat) == tensors - blocks - 1
    assert sum(int(np.prod(leaf.shape)) for _, leaf in flat) == parameters
