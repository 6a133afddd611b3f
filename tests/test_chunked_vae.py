"""Chunked encode/decode equals the whole-signal pass; the receptive-field bound really bounds it."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randomize_snake

from stableaudio_jax.config_loader import load_config
from stableaudio_jax.models.autoencoder import OobleckVAE, vae_from_config
from stableaudio_jax.models.chunked_vae import (chunked_decode, chunked_encode, chunked_encode_moments,
                                                decoder_receptive_field, encoder_receptive_field)


def _init(vae, frames=4):
    init = jax.jit(lambda k, a: nn.unbox(vae.init(k, a, sample=False)))
    audio = jnp.zeros((1, frames * vae.downsampling_ratio, vae.audio_channels))
    return randomize_snake(init(jax.random.key(0), audio))


@pytest.fixture(scope="module")
def tiny():
    vae = vae_from_config(load_config("configs/vae.py:tiny").model)
    return vae, _init(vae)


# A narrow model with Stable Audio Open's exact strides (2048x), cheap enough for CPU.
@pytest.fixture(scope="module")
def sao_shaped():
    model = dict(load_config("configs/vae.py:sao").model, channels=2, c_mults=(1, 2, 2, 4, 4), latent_dim=2)
    vae = vae_from_config(model)
    return vae, _init(vae, frames=1)


def _influence_radius(fn, x, index, rate_in, rate_out):
    """Empirical receptive field: how far (in latent frames) a change at ``index`` reaches."""
    base = fn(x)
    bumped = fn(x.at[:, index * rate_in].add(1.0))
    changed = np.nonzero(np.asarray(jnp.abs(bumped - base).max(axis=(0, 2))) > 0)[0]
    assert changed.size, "the bump changed nothing"
    return max(index - changed.min() / rate_out, changed.max() / rate_out - index)


@pytest.mark.parametrize("fixture", ["tiny", "sao_shaped"])
def test_receptive_field_bounds_the_real_one(fixture, request):
    vae, params = request.getfixturevalue(fixture)
    ratio = vae.downsampling_ratio
    frames = 2 * max(decoder_receptive_field(vae), encoder_receptive_field(vae)) + 8
    decode = jax.jit(lambda z: vae.apply(params, z, method=OobleckVAE.decode))
    encode = jax.jit(lambda a: vae.apply(params, a, method=OobleckVAE.encode_moments))
    latents = jax.random.normal(jax.random.key(1), (1, frames, vae.latent_dim))
    audio = jax.random.normal(jax.random.key(2), (1, frames * ratio, vae.audio_channels))
    dec_radius = _influence_radius(decode, latents, frames // 2, 1, ratio)
    enc_radius = _influence_radius(encode, audio, frames // 2, ratio, 1)
    assert dec_radius <= decoder_receptive_field(vae) and enc_radius <= encoder_receptive_field(vae)
    # and the bound is not wildly loose (so the default overlaps are meaningful)
    assert decoder_receptive_field(vae) <= dec_radius + 4 and encoder_receptive_field(vae) <= enc_radius + 3


def test_sao_receptive_field_within_default_overlap():
    vae = vae_from_config(load_config("configs/vae.py:sao").model)
    # SAO paper, App. B: chunked decoding is exact with 16 latents of overlap per side; SAT's default is 32.
    assert decoder_receptive_field(vae) <= 16 and encoder_receptive_field(vae) <= 16


@pytest.mark.parametrize("frames,chunk", [(300, 40), (257, 64), (50, 40)])
def test_chunked_decode_equals_full_decode(tiny, frames, chunk):
    vae, params = tiny
    overlap = decoder_receptive_field(vae)
    latents = jax.random.normal(jax.random.key(frames), (2, frames, vae.latent_dim))
    full = jax.jit(lambda p, z: vae.apply(p, z, method=OobleckVAE.decode))(params, latents)
    chunked = jax.jit(lambda p, z: chunked_decode(vae, p, z, chunk_size=chunk, overlap=overlap))(params, latents)
    assert chunked.shape == full.shape == (2, frames * vae.downsampling_ratio, 2)
    np.testing.assert_allclose(chunked, full, atol=2e-6 * float(jnp.abs(full).max()), rtol=0)


def test_chunked_encode_equals_full_encode(tiny):
    vae, params = tiny
    overlap = encoder_receptive_field(vae)
    audio = jax.random.normal(jax.random.key(3), (2, 230 * vae.downsampling_ratio, 2))
    full = jax.jit(lambda p, a: vae.apply(p, a, method=OobleckVAE.encode_moments))(params, audio)
    chunked = jax.jit(lambda p, a: chunked_encode_moments(vae, p, a, chunk_size=48, overlap=overlap))(params, audio)
    np.testing.assert_allclose(chunked, full, atol=2e-6 * float(jnp.abs(full).max()), rtol=0)
    # sampled latents: the noise is drawn for the whole sequence, so they match the unchunked sample too
    key = jax.random.key(9)
    want = jax.jit(lambda p, a: vae.apply(p, a, True, key, method=OobleckVAE.encode))(params, audio)
    got = jax.jit(lambda p, a: chunked_encode(vae, p, a, sample=True, rng=key, chunk_size=48,
                                              overlap=overlap))(params, audio)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_chunked_decode_on_sao_strides(sao_shaped):
    vae, params = sao_shaped
    latents = jax.random.normal(jax.random.key(4), (1, 70, vae.latent_dim))
    full = jax.jit(lambda p, z: vae.apply(p, z, method=OobleckVAE.decode))(params, latents)
    chunked = jax.jit(lambda p, z: chunked_decode(vae, p, z, chunk_size=16, overlap=16))(params, latents)
    np.testing.assert_allclose(chunked, full, atol=2e-6 * float(jnp.abs(full).max()), rtol=0)


def test_overlap_below_receptive_field_is_refused(tiny):
    vae, params = tiny
    with pytest.raises(ValueError, match=r"overlap 3 latent frames is below the receptive field"):
        chunked_decode(vae, params, jnp.zeros((1, 400, vae.latent_dim)), chunk_size=32, overlap=3)
    with pytest.raises(ValueError, match=r"is below the receptive field"):
        chunked_encode(vae, params, jnp.zeros((1, 400 * vae.downsampling_ratio, 2)), chunk_size=32, overlap=3)
