"""The Stable Audio 1.0 U-Net: exact size, and parity with stable-audio-tools' UNetCFG1d through a stored reference.

``tests/data/unet_reference.npz`` holds the reference's outputs for the ``tiny`` config: stable-audio-tools'
``UNetCFG1d`` (commit 50049e3) was built with that config, loaded with ``helpers.synthetic_state_dict`` of its own
state-dict shapes (stored in the file) and run on the stored inputs, plain, without a mask, with batched CFG + rescale
(scale 3, phi 0.4) and with a negative prompt. Here the same weights, written under the same key names, go through
our converter (every key and shape checked) into our U-Net. ``benchmarks/make_unet_reference.py --stable-audio-tools
PATH`` rebuilds the file from a stable-audio-tools checkout (``--check`` compares instead of writing).
"""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import model_config, synthetic_state_dict

from stableaudio_jax.convert import CheckpointMismatchError
from stableaudio_jax.convert.unet import unet_config_from_stable_audio_tools, unet_params_from_state_dict
from stableaudio_jax.models.autoencoder import count_params
from stableaudio_jax.models.unet import unet_from_config

pytestmark = pytest.mark.parity


DATA = os.path.join(os.path.dirname(__file__), "data", "unet_reference.npz")


def _abstract(unet, length=16, tokens=4):
    args = (jax.ShapeDtypeStruct((1, length, unet.in_channels), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.float32),
            jax.ShapeDtypeStruct((1, tokens, unet.context_features), jnp.float32))
    return jax.eval_shape(lambda *a: unet.init(jax.random.key(0), *a), *args)


def test_sa1_parameter_count():
    assert count_params(_abstract(unet_from_config(model_config("configs/unet.py:sa1")))) == 906_679_744


@pytest.fixture(scope="module")
def reference():
    data = dict(np.load(DATA))
    unet = unet_from_config(model_config("configs/unet.py:tiny"))
    state = synthetic_state_dict(json.loads(str(data["shapes"])), seed=0)
    return unet, unet_params_from_state_dict(state, unet, "unet_reference.npz"), data, state


def test_tiny_matches_the_reference_structure(reference):
    unet, params, data, state = reference
    assert count_params(params) == sum(v.size for v in state.values()) == 3_998_584
    reference_cfg = json.loads(str(data["config"]))
    sat = {"model": {"diffusion": {"type": "adp_cfg_1d", "config": reference_cfg}}}
    ours = dict(model_config("configs/unet.py:tiny"))
    converted = unet_config_from_stable_audio_tools(sat)
    assert {k: converted[k] for k in converted if k != "type"} == {k: ours[k] for k in converted if k != "type"}


@pytest.mark.parametrize("case", ["plain", "nomask", "cfg_rescaled", "cfg_negative"])
def test_parity_with_stable_audio_tools(reference, case):
    unet, params, d, _ = reference
    kwargs = {"plain": dict(embedding_mask=d["mask"]), "nomask": dict(),
              "cfg_rescaled": dict(embedding_mask=d["mask"], cfg_scale=3.0, scale_phi=0.4),
              "cfg_negative": dict(embedding_mask=d["mask"], cfg_scale=3.0, negative_embedding=d["negative"],
                                   negative_mask=d["negative_mask"])}[case]
    out = jax.jit(lambda p: unet.apply(p, d["x"], d["t"], d["embedding"], **kwargs))(params)
    assert out.shape == d[case].shape and np.abs(np.asarray(out) - d[case]).max() <= 1e-4
    assert np.abs(d[case]).max() > 1.0


def test_cfg_dropout_uses_the_learned_null(reference):
    unet, params, d, _ = reference
    null = np.asarray(params["params"]["fixed_embedding"]["embed"]["embedding"])[None].repeat(2, 0)
    run = jax.jit(lambda p, emb, prob: unet.apply(p, d["x"], d["t"], emb, d["mask"], dropout_rng=jax.random.key(0),
                                                  dropout_prob=prob))
    dropped = run(params, d["embedding"], 1.0)
    direct = jax.jit(lambda p: unet.apply(p, d["x"], d["t"], null, d["mask"]))(params)
    np.testing.assert_allclose(dropped, direct, atol=1e-5)
    kept = run(params, d["embedding"], 0.0)
    np.testing.assert_allclose(kept, d["plain"], atol=1e-4)


def test_converter_lists_problems(reference):
    unet, _, d, state = reference
    broken = dict(state)
    del broken["upsamples.0.upsample.bias"]
    broken["downsamples.0.transformer.blocks.0.attention.to_q.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)missing keys.*upsamples.0.upsample.bias.*shape "
                                                      r"mismatches.*blocks.0.attention.to_q.weight"):
        unet_params_from_state_dict(broken, unet)


def test_bad_inputs(reference):
    unet, params, d, _ = reference
    with pytest.raises(ValueError, match=r"length a multiple of 16"):
        jax.eval_shape(lambda: unet.apply(params, np.zeros((2, 24, 8)), d["t"], d["embedding"]))
    with pytest.raises(ValueError, match=r"embedding has shape \(2, 7, 32\); expected \[batch, <= 6, 32\]"):
        jax.eval_shape(lambda: unet.apply(params, d["x"], d["t"], np.zeros((2, 7, 32))))


def test_bfloat16_tracks_float32(reference):
    unet, params, d, _ = reference
    out = jax.jit(lambda p: unet.clone(dtype=jnp.bfloat16).apply(p, d["x"], d["t"], d["embedding"], d["mask"]))(params)
    assert out.dtype == jnp.float32
    assert np.linalg.norm(np.asarray(out) - d["plain"]) / np.linalg.norm(d["plain"]) < 3e-2


def test_fresh_init_is_halved_pytorch_init():
    # the building blocks (initialising the whole U-Net compiles ~700 random draws: slow on CPU)
    from stableaudio_jax.models.unet import ConvTranspose1d, ResnetBlock
    x, mapping = jnp.zeros((1, 16, 64)), jnp.zeros((1, 128))
    res = jax.jit(lambda k: ResnetBlock(96, 8, init_scale=0.5).init(k, x, mapping))(jax.random.key(0))
    p = jax.tree_util.tree_map(np.asarray, nn.unbox(res))["params"]
    assert np.allclose(p["norm1"]["scale"], 0.5) and not p["norm1"]["bias"].any()  # GroupNorm gains start at 0.5
    for w, bound in [(p["conv1"]["kernel"], 0.5 / np.sqrt(64 * 3)), (p["film"]["kernel"], 0.5 / np.sqrt(128)),
                     (p["conv1"]["bias"], 0.5 / np.sqrt(64 * 3))]:
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound  # torch: U(+-1/sqrt(fan_in)) * 0.5
    up = jax.jit(lambda k: ConvTranspose1d(32, 4, init_scale=0.5).init(k, x))(jax.random.key(1))
    w = np.asarray(nn.unbox(up)["params"]["kernel"])  # [8, 64, 32]; torch's fan-in is out_channels * k
    assert w.shape == (8, 64, 32) and 0.8 * 0.5 / np.sqrt(32 * 8) < np.abs(w).max() <= 0.5 / np.sqrt(32 * 8)
