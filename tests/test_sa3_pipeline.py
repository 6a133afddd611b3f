"""A Stable Audio 3 model in the store and its pipeline: a tiny SA3 bundle (T5Gemma with a Gemma-style tokenizer,
the SA3 DiT with its conditioner, a SAME autoencoder; configs/sa3.py:tiny and configs/same.py:tiny, random
weights) saved, loaded, and asked for clips of other durations, guided by a negative prompt, from audio, and with a
region inpainted."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import gemma_style_tokenizer
from stableaudio_jax.config_loader import load_config
from stableaudio_jax.inference.sa3_pipeline import SA3Pipeline
from stableaudio_jax.models.t5gemma import T5GemmaEncoder
from stableaudio_jax.store import load_text_to_audio
from stableaudio_jax.store.format import StoreError
from stableaudio_jax.store.hf_tokenizer import HFTokenizer
from stableaudio_jax.store.models import VAE
from stableaudio_jax.store.sa3 import SA3Model, denoiser_from_config, load_sa3, save_sa3
from stableaudio_jax.store.builders import vae_from_config
from stableaudio_jax.store.t5gemma_text import T5GemmaText


def _random_kernels(params, seed, scale=0.2):
    """Every weight matrix random: the zero-initialised branch outputs (the DiT's, and SAME's, whose decoder
    ignores its latents until trained) would make every clip the same."""
    leaves, tree = jax.tree_util.tree_flatten_with_path(nn.unbox(params))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [jax.random.normal(k, x.shape) * scale if jax.tree_util.keystr(p).endswith("['kernel']") else x
           for k, (p, x) in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(tree, new)


def _example(denoiser):
    width = denoiser.conditioner.features
    return (jnp.zeros((1, 4, denoiser.latent_channels)), jnp.zeros((1,)), jnp.zeros((1, 3, width)),
            jnp.ones((1, 3), bool), jnp.ones((1,)))


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    root = tmp_path_factory.mktemp("sa3")
    gemma_style_tokenizer(root / "tokenizer", {"padding_side": "right"})
    encoder = T5GemmaEncoder(vocab_size=300, d_model=16, mlp_hidden=32, num_layers=1, num_heads=2, num_kv_heads=2,
                             head_dim=8, query_pre_attn_scalar=8, sliding_window=None)
    text = T5GemmaText(encoder, encoder.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), bool)),
                       HFTokenizer.from_directory(root / "tokenizer", max_length=12), 12)
    config = load_config("sa3.py:tiny")
    config.conditioning.max_length = 12
    # a post-trained model's settings (as converted ones have): the config's own are a "-base" model's (train)
    config.diffusion.objective = "rf_denoiser"
    config.generation.update(sampler="pingpong", steps=8)
    denoiser = denoiser_from_config(config)
    params = _random_kernels(denoiser.init(jax.random.key(1), *_example(denoiser)), 1)
    same = load_config("same.py:tiny").model
    vae_module = vae_from_config(same)
    vae_params = _random_kernels(vae_module.init(jax.random.key(2), jnp.zeros((1, 4 * vae_module.downsampling_ratio, 2))), 2)
    model = SA3Model(text, denoiser, params, VAE(vae_module, vae_params, same), config)
    return save_sa3(root / "model", model)


def test_a_stored_sa3_model_generates_clips_of_the_requested_lengths(stored):
    pipe = SA3Pipeline(load_sa3(stored), buckets=(32, 48, 64))
    clips = pipe(["slow piano", "happy flute at 120 BPM"], seconds=[0.3, 0.7], seed=1)
    assert [c.shape for c in clips] == [(600, 2), (1400, 2)]
    assert all(np.isfinite(c).all() and np.abs(c).max() <= 1.0 and np.abs(c).max() > 0 for c in clips)
    again = pipe(["slow piano", "happy flute at 120 BPM"], seconds=[0.3, 0.7], seed=1)
    np.testing.assert_array_equal(clips[0], again[0])
    other = pipe(["slow piano", "happy flute at 120 BPM"], seconds=[0.3, 0.7], seed=2)
    assert np.abs(clips[0] - other[0]).max() > 1e-5  # (the random SAME decoder barely moves with its latents)


def test_guidance_audio_to_audio_and_inpainting_run_and_bad_requests_are_named(stored):
    pipe = SA3Pipeline(load_sa3(stored), buckets=(32, 48, 64))
    source = np.asarray(jax.random.uniform(jax.random.key(3), (1, 1000, 2), minval=-0.5, maxval=0.5))
    guided = pipe(["slow piano"], seconds=[0.5], cfg_scale=4.0, negative_prompt="sad", seed=0)[0]
    plain = pipe(["slow piano"], seconds=[0.5], seed=0)[0]
    assert guided.shape == (1000, 2) and np.abs(guided - plain).max() > 1e-5
    varied = pipe(["slow piano"], seconds=[0.5], init_audio=source, init_noise_level=0.5, seed=0)[0]
    inpainted = pipe(["slow piano"], seconds=[0.5], inpaint_audio=source, inpaint_regions=[(0.1, 0.3)], seed=0)[0]
    assert varied.shape == inpainted.shape == (1000, 2)
    assert np.abs(varied - plain).max() > 1e-5 and np.abs(inpainted - plain).max() > 1e-5
    with pytest.raises(ValueError, match=r"duration \[2.0\] s: expected seconds in \(0, 1.02\]"):
        pipe(["slow piano"], seconds=[2.0])
    with pytest.raises(ValueError, match=r"inpainting region \(0.4, 0.6\) s: expected .* 0.50 s"):
        pipe(["slow piano"], seconds=[0.5], inpaint_audio=source, inpaint_regions=[(0.4, 0.6)])
    with pytest.raises(ValueError, match="init_noise_level is 1.5"):
        pipe(["slow piano"], seconds=[0.5], init_audio=source, init_noise_level=1.5)


def test_the_sao_family_loader_names_the_sa3_loader(stored):
    with pytest.raises(StoreError, match="a Stable Audio 3 model; load it with store.sa3.load_sa3"):
        load_text_to_audio(stored)
