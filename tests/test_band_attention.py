"""Band attention (models/band_attention.py), SAME's attention: the blocked XLA path and the Pallas splash kernel
(run in Pallas' TPU interpreter here, compiled ahead of time for a TPU slice) equal plain masked attention, and the
SAME autoencoder gives the same audio through either."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from stableaudio_jax.models import band_attention as band
from stableaudio_jax.models import same


def _qkv(length: int, heads: int = 2, dim: int = 8, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 3)
    return [jax.random.normal(k, (2, length, heads, dim), jnp.float32) for k in keys]


def _dense_reference(q, k, v, window):
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    i = np.arange(q.shape[1])
    if window is not None:
        scores = np.where(np.abs(i[:, None] - i[None, :]) <= window, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return np.einsum("bhqk,bkhd->bqhd", weights / weights.sum(-1, keepdims=True), v)


@pytest.mark.parametrize("window", [5, None], ids=["a band", "no band"])
def test_both_paths_equal_plain_masked_attention(window):
    """300 tokens: the XLA path in blocks of 64 (a band crossing block edges, a ragged last block), the splash
    kernel in blocks of 128 (the sequence padded to 384, the padding its own segment)."""
    q, k, v = _qkv(300)
    expected = _dense_reference(*map(np.asarray, (q, k, v)), window)
    xla = band.xla_band_attention(q, k, v, window, block=64)
    np.testing.assert_allclose(np.asarray(xla), expected, atol=2e-5)
    with pltpu.force_tpu_interpret_mode():
        splash = jax.jit(lambda *a: band.splash_band_attention(*a, window, block=128))(q, k, v)
    np.testing.assert_allclose(np.asarray(splash), expected, atol=2e-5)


def test_auto_takes_xla_off_tpu_and_unknown_implementations_are_refused():
    q, k, v = _qkv(40)
    np.testing.assert_array_equal(np.asarray(band.band_attention(q, k, v, 3)),
                                  np.asarray(band.xla_band_attention(q, k, v, 3)))
    with pytest.raises(ValueError, match="'flash'; expected one of"):
        band.band_attention(q, k, v, 3, impl="flash")


def test_a_same_l_shaped_autoencoder_decodes_the_same_audio_through_the_splash_kernel():
    """A sliding-window SAME (SAME-L's attention: one latent's tokens either side) decoded with either path."""
    kw = dict(patch_size=8, latent_dim=8, stride=4, head_dim=8, chunk_size=8, width=16, encoder_depth=1,
              decoder_depth=2, midpoint_shift=False, sliding_window=1, decoder_sinusoidal_blocks=1,
              decoder_mask_noise=0.0)
    xla, splash = (same.SAMEAutoencoder(**kw, attention_impl=impl) for impl in ("xla", "splash"))
    latents = jax.random.normal(jax.random.key(1), (1, 30, 8))  # 150 decoder tokens: 2 kernel blocks of 128
    params = xla.init(jax.random.key(0), latents, method="decode")
    expected = xla.apply(params, latents, method="decode")
    with pltpu.force_tpu_interpret_mode():
        got = jax.jit(lambda p, z: splash.apply(p, z, method="decode"))(params, latents)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=2e-5)


def test_the_splash_path_compiles_for_a_tpu_slice_at_same_l_decoder_sizes():
    """The kernel lowers through Mosaic for a TPU v5e chip ahead of time (no TPU here) at the sizes of one SAME-L
    decode window: 192 latents' 3,264 tokens, 24 heads of 64, a band of 17 tokens either side, bfloat16; the
    compiled program holds the kernel as a custom call and no [L, L] score matrix."""
    from stableaudio_jax.bench import targets
    device = targets.resolve("tpu:v5e-1").devices[0]
    on_chip = jax.sharding.SingleDeviceSharding(device)
    shape = jax.ShapeDtypeStruct((1, 3264, 24, 64), jnp.bfloat16)
    compiled = jax.jit(lambda q, k, v: band.band_attention(q, k, v, 17, impl="splash"),
                       in_shardings=(on_chip,) * 3, out_shardings=on_chip).lower(shape, shape, shape).compile()
    text = compiled.as_text()
    assert "tpu_custom_call" in text and "3264,3264" not in text.replace(" ", "")
