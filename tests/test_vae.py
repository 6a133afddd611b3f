"""The Oobleck VAE: exact SAO size, shapes, errors, bottleneck, sampling, remat, bf16 and gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import randomize_snake

from stableaudio_jax.config_loader import load_config
from stableaudio_jax.models.autoencoder import (DiagonalGaussian, OobleckVAE, count_params, pad_to_multiple,
                                                posterior_from_moments, vae_from_config)


@pytest.fixture(scope="module")
def tiny():
    vae = vae_from_config(load_config("configs/vae.py:tiny").model)
    audio = jax.random.normal(jax.random.key(0), (2, 32 * vae.downsampling_ratio, 2))
    params = randomize_snake(jax.jit(lambda k, a: nn.unbox(vae.init(k, a, sample=False)))(jax.random.key(1), audio))
    return vae, params, audio


def test_sao_parameter_count_is_exactly_the_reference():
    vae = vae_from_config(load_config("configs/vae.py:sao").model)
    assert vae.downsampling_ratio == 2048 and vae.latent_dim == 64 and vae.sample_rate == 44100
    audio = jax.ShapeDtypeStruct((1, 2048, 2), jnp.float32)
    abstract = jax.eval_shape(lambda a: vae.init(jax.random.key(0), a, sample=False), audio)  # no allocation
    params = nn.unbox(abstract)["params"]
    assert count_params(abstract) == 156_112_514
    assert count_params(params["encoder"]) == 77_989_888
    assert count_params(params["decoder"]) == 78_122_626
    # spot-check shapes against the reference's tensors (our [k, in, out] layout)
    assert params["encoder"]["conv_out"]["weight_v"].shape == (3, 2048, 128)
    assert params["decoder"]["conv_in"]["weight_v"].shape == (7, 64, 2048)
    assert params["decoder"]["blocks_0"]["conv_t"]["weight_v"].shape == (16, 2048, 1024)
    assert params["decoder"]["blocks_0"]["conv_t"]["weight_g"].shape == (2048,)  # per input channel
    assert "bias" not in params["decoder"]["conv_out"]


def test_every_parameter_has_logical_axis_names():
    vae = vae_from_config(load_config("configs/vae.py:tiny").model)
    boxed = jax.eval_shape(lambda a: vae.init(jax.random.key(0), a, sample=False),
                           jax.ShapeDtypeStruct((1, 8, 2), jnp.float32))
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    assert all(len(x.names) == x.value.ndim and all(n is not None for n in x.names) for x in leaves)


def test_shapes_round_trip(tiny):
    vae, params, audio = tiny
    latents = vae.apply(params, audio, method=OobleckVAE.encode)
    assert latents.shape == (2, 32, 4)
    recon = vae.apply(params, latents, method=OobleckVAE.decode)
    assert recon.shape == audio.shape and recon.dtype == jnp.float32
    out = vae.apply(params, audio, jax.random.key(5))
    assert out.reconstruction.shape == audio.shape and out.latents.shape == latents.shape


@pytest.mark.parametrize("shape,message", [
    ((2, 64, 3), r"audio has shape \(2, 64, 3\); expected \[batch, samples, 2\]"),
    ((2, 64), r"audio has shape \(2, 64\)"),
    ((1, 60, 2), r"audio length 60 is not a multiple of the downsampling ratio 8"),
])
def test_bad_audio_is_a_clear_error(tiny, shape, message):
    vae, params, _ = tiny
    with pytest.raises(ValueError, match=message):
        vae.apply(params, jnp.zeros(shape), method=OobleckVAE.encode)


def test_bad_latents_are_a_clear_error(tiny):
    vae, params, _ = tiny
    with pytest.raises(ValueError, match=r"latents have shape \(1, 8, 5\); expected \[batch, frames, 4\]"):
        vae.apply(params, jnp.zeros((1, 8, 5)), method=OobleckVAE.decode)


def test_pad_to_multiple():
    audio = jnp.ones((1, 60, 2))
    padded = pad_to_multiple(audio, 8)
    assert padded.shape == (1, 64, 2) and float(padded[:, 60:].sum()) == 0.0 and float(padded[:, :60].min()) == 1.0
    assert pad_to_multiple(padded, 8) is padded


def test_bottleneck_matches_reference_formulas():
    rng = np.random.default_rng(0)
    moments = rng.standard_normal((3, 5, 8)).astype(np.float32) * 2
    post = posterior_from_moments(jnp.asarray(moments))
    mean, scale = moments[..., :4], moments[..., 4:]
    std = np.log1p(np.exp(scale)) + 1e-4
    np.testing.assert_allclose(post.mean, mean)
    np.testing.assert_allclose(post.std, std, rtol=1e-6)
    var = std ** 2
    kl = (mean ** 2 + var - np.log(var) - 1).sum(-1).mean()  # sum over channels, mean over batch and time
    np.testing.assert_allclose(post.kl(), kl, rtol=1e-5)
    # a standard-normal posterior has (almost) zero KL
    unit = DiagonalGaussian(mean=jnp.zeros((1, 4, 3)), std=jnp.ones((1, 4, 3)))
    assert abs(float(unit.kl())) < 1e-6


def test_sampled_encode_is_seeded(tiny):
    vae, params, audio = tiny
    enc = jax.jit(lambda p, a, k: vae.apply(p, a, True, k, method=OobleckVAE.encode))
    a1, a2, b = enc(params, audio, jax.random.key(7)), enc(params, audio, jax.random.key(7)), enc(
        params, audio, jax.random.key(8))
    np.testing.assert_array_equal(a1, a2)
    assert float(jnp.abs(a1 - b).max()) > 1e-3
    post = vae.apply(params, audio, method=OobleckVAE.encode_posterior)
    z = (np.asarray(a1) - np.asarray(post.mean)) / np.asarray(post.std)  # the standard-normal draw
    assert abs(z.mean()) < 0.2 and 0.8 < z.std() < 1.2
    with pytest.raises(ValueError, match="needs an rng key"):
        vae.apply(params, audio, True, None, method=OobleckVAE.encode)


def test_remat_gives_the_same_values_and_gradients(tiny):
    vae, params, audio = tiny
    remat_vae = vae.clone(remat=True)

    def loss(model, p):
        out = model.apply(p, audio, sample=False)
        return jnp.mean(jnp.square(out.reconstruction - audio)) + 1e-4 * out.posterior.kl()

    l0, g0 = jax.jit(jax.value_and_grad(lambda p: loss(vae, p)))(params)
    l1, g1 = jax.jit(jax.value_and_grad(lambda p: loss(remat_vae, p)))(params)
    np.testing.assert_allclose(l0, l1, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g0, g1)
    # weight-norm g and v and Snake alpha/beta all receive gradient (the VAE is trainable as the reference)
    block = g0["params"]["decoder"]["blocks_0"]
    for leaf in (block["conv_t"]["weight_g"], block["conv_t"]["weight_v"], block["res_1"]["act_0"]["alpha"],
                 block["res_1"]["act_0"]["beta"]):
        assert float(jnp.abs(leaf).max()) > 0


def test_bfloat16_compute_tracks_float32(tiny):
    vae, params, audio = tiny
    bf16 = vae.clone(dtype=jnp.bfloat16)
    z32 = jax.jit(lambda p, a: vae.apply(p, a, method=OobleckVAE.encode))(params, audio)
    z16 = jax.jit(lambda p, a: bf16.apply(p, a, method=OobleckVAE.encode))(params, audio)
    assert z16.dtype == jnp.float32  # the bottleneck runs in float32
    rel = float(jnp.linalg.norm(z16 - z32) / jnp.linalg.norm(z32))
    assert rel < 0.05
    recon16 = jax.jit(lambda p, z: bf16.apply(p, z, method=OobleckVAE.decode))(params, z32)
    assert recon16.dtype == jnp.bfloat16


def test_vae_from_config_rejects_unknown_keys():
    model = dict(load_config("configs/vae.py:tiny").model)
    with pytest.raises(ValueError, match=r"unknown keys \['chanels'\]"):
        vae_from_config({**model, "chanels": 3})
    with pytest.raises(ValueError, match="expected 'oobleck_vae'"):
        vae_from_config({**model, "type": "dac"})
    bad = vae_from_config({**model, "strides": (2, 4, 4)})
    with pytest.raises(ValueError, match="must have the same length"):
        bad.init(jax.random.key(0), jnp.zeros((1, 32, 2)), sample=False)


def test_elu_variant_runs():
    model = dict(load_config("configs/vae.py:tiny").model, activation="elu")
    vae = vae_from_config(model)
    params = jax.jit(lambda k, a: vae.init(k, a, sample=False))(jax.random.key(0), jnp.zeros((1, 16, 2)))
    assert not any("alpha" in str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])
    out = jax.jit(lambda p, a: vae.apply(p, a, sample=False))(params, jnp.ones((1, 16, 2)))
    assert out.reconstruction.shape == (1, 16, 2) and bool(jnp.isfinite(out.reconstruction).all())
