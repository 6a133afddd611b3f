"""Timing embedders and the assembled conditioning against diffusers' StableAudioProjectionModel and pipeline."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import timing_state_to_sat
from diffusers import AutoencoderOobleck, EDMDPMSolverMultistepScheduler, StableAudioDiTModel, StableAudioPipeline
from diffusers.pipelines.stable_audio import StableAudioProjectionModel
from transformers import T5Config, T5EncoderModel

from stableaudio_jax.convert import (conditioning_config_from_stable_audio_tools, t5_config_from_hf,
                                     t5_params_from_state_dict, timing_params_from_state_dict)
from stableaudio_jax.convert.t5 import t5_from_config
from stableaudio_jax.store.text_encoders import T5TextEncoder
from stableaudio_jax.models.conditioning import (Conditioning, IntEmbedder, LearnedNullEmbedding, NumberEmbedder,
                                                 TimingConditioner, assemble_conditioning, cfg_dropout,
                                                 guidance_batch, negative_conditioning, null_conditioning)

DIM = 32


@pytest.fixture(scope="module")
def projection():
    torch.manual_seed(0)
    model = StableAudioProjectionModel(text_encoder_dim=DIM, conditioning_dim=DIM, min_value=0, max_value=512).eval()
    with torch.no_grad():  # Linear bias and Fourier weights away from their init
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _state(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


SECONDS = np.array([-5.0, 0.0, 3.7, 47.55, 511.9, 600.0], np.float32)  # outside [0, 512] is clamped


@pytest.mark.parametrize("layout", ["diffusers", "stable-audio-tools"])
def test_timing_parity(projection, layout):
    timing = TimingConditioner(features=DIM)
    state = _state(projection) if layout == "diffusers" else timing_state_to_sat(_state(projection))
    params = timing_params_from_state_dict(state, timing, layout)
    start, total = timing.apply(params, jnp.asarray(SECONDS), jnp.asarray(SECONDS[::-1].copy()))
    with torch.no_grad():
        out = projection(start_seconds=torch.from_numpy(SECONDS), end_seconds=torch.from_numpy(SECONDS[::-1].copy()))
    assert start.shape == (6, 1, DIM)
    assert np.abs(np.asarray(start) - out.seconds_start_hidden_states.numpy()).max() <= 1e-5
    assert np.abs(np.asarray(total) - out.seconds_end_hidden_states.numpy()).max() <= 1e-5
    np.testing.assert_allclose(start[0], start[1], atol=1e-6)  # -5 clamps to 0
    np.testing.assert_allclose(start[5], timing.apply(params, jnp.array([512.0]), jnp.array([0.0]))[0][0],
                               atol=1e-6)  # 600 clamps to 512


def test_number_embedder_fourier_order():
    emb = NumberEmbedder(features=4, fourier_dim=4, min_val=0, max_val=10)
    w, kernel = np.array([0.3, -1.2], np.float32), np.eye(5, 4, dtype=np.float32)
    params = {"params": {"fourier": {"weights": w}, "proj": {"kernel": kernel, "bias": np.zeros(4, np.float32)}}}
    out = np.asarray(emb.apply(params, jnp.array([5.0])))[0, 0]
    x = 0.5
    np.testing.assert_allclose(out, [x, np.sin(2 * np.pi * x * w[0]), np.sin(2 * np.pi * x * w[1]),
                                     np.cos(2 * np.pi * x * w[0])], rtol=1e-6)  # [x, sin..., cos...]


def test_timing_keys_are_all_checked(projection):
    state = _state(projection)
    state["start_number_conditioner.extra.weight"] = np.zeros(2, np.float32)
    del state["end_number_conditioner.time_positional_embedding.1.bias"]
    with pytest.raises(ValueError, match=r"(?s)missing.*end_number_conditioner.time_positional_embedding.1.bias"
                                         r".*unexpected.*start_number_conditioner.extra.weight"):
        timing_params_from_state_dict(state, TimingConditioner(features=DIM), "diffusers")


def test_int_embedder_and_sat_int_keys():
    timing = TimingConditioner(features=8, style="int")
    table = np.random.default_rng(0).standard_normal((513, 8)).astype(np.float32)
    state = {"seconds_start.int_embedder.weight": table, "seconds_total.int_embedder.weight": 2 * table}
    params = timing_params_from_state_dict(state, timing, "stable-audio-tools")
    start, total = timing.apply(params, jnp.array([-3.0, 10.9, 700.0]), jnp.array([30.0, 30.0, 30.0]))
    np.testing.assert_array_equal(np.asarray(start)[:, 0], table[[0, 10, 512]])  # clamped, floored
    np.testing.assert_array_equal(np.asarray(total)[:, 0], 2 * table[[30, 30, 30]])
    emb = IntEmbedder(features=8)
    assert emb.apply(emb.init(jax.random.key(0), jnp.zeros(2)), jnp.zeros(2)).shape == (2, 1, 8)


def test_learned_null_embedding_is_positional():
    null = LearnedNullEmbedding(max_length=79, features=8)
    params = null.init(jax.random.key(0), 2, 79)
    out = null.apply(params, 3, 79)
    assert out.shape == (3, 79, 8)
    np.testing.assert_array_equal(out[0], out[2])
    assert not np.allclose(out[0, 0], out[0, 1])
    np.testing.assert_array_equal(null.apply(params, 1, 5)[0], out[0, :5])
    with pytest.raises(ValueError, match="sequence length 80 exceeds max_length 79"):
        null.apply(params, 1, 80)


def _conditioning(batch=4, length=6):
    rng = np.random.default_rng(0)
    mask = np.ones((batch, length), bool)
    mask[0, 3:] = False
    text = rng.standard_normal((batch, length, DIM)).astype(np.float32) * mask[..., None]
    start, total = (jnp.asarray(rng.standard_normal((batch, 1, DIM)), jnp.float32) for _ in range(2))
    return assemble_conditioning(jnp.asarray(text), jnp.asarray(mask), (start, total), (start, total)), start, total


def test_assembly_order_and_cfg_helpers():
    cond, start, total = _conditioning()
    assert cond.cross_attn.shape == (4, 8, DIM) and cond.global_cond.shape == (4, 2 * DIM)
    np.testing.assert_array_equal(cond.cross_attn[:, 6:7], start)
    np.testing.assert_array_equal(cond.cross_attn[:, 7:8], total)
    np.testing.assert_array_equal(cond.global_cond, jnp.concatenate([start[:, 0], total[:, 0]], -1))
    assert cond.cross_attn_mask[:, 6:].all() and not cond.cross_attn_mask[0, 3:6].any()
    null = null_conditioning(cond)
    assert not np.asarray(null.cross_attn).any()
    np.testing.assert_array_equal(null.global_cond, cond.global_cond)  # timing never dropped from the global token
    both = guidance_batch(cond, null)
    assert both.cross_attn.shape == (8, 8, DIM)
    np.testing.assert_array_equal(both.cross_attn[:4], cond.cross_attn)
    with pytest.raises(ValueError, match=r"timing token #0 has shape \(4, 32\)"):
        assemble_conditioning(cond.cross_attn, cond.cross_attn_mask, (start[:, 0],), ())


def test_cfg_dropout_rate_and_rows():
    cond, _, _ = _conditioning()
    many = jax.tree_util.tree_map(lambda x: jnp.repeat(x, 500, axis=0), cond)
    dropped = jax.jit(lambda k, c: cfg_dropout(k, c, 0.1))(jax.random.key(0), many)
    rows_zero = ~np.asarray(dropped.cross_attn).reshape(2000, -1).any(axis=1)
    rows_same = (np.asarray(dropped.cross_attn) == np.asarray(many.cross_attn)).reshape(2000, -1).all(axis=1)
    assert (rows_zero | rows_same).all()  # each example is dropped whole or kept whole
    assert 0.07 < rows_zero.mean() < 0.13
    np.testing.assert_array_equal(dropped.global_cond, many.global_cond)
    assert not np.asarray(cfg_dropout(jax.random.key(1), cond, 1.0).cross_attn).any()
    np.testing.assert_array_equal(cfg_dropout(jax.random.key(1), cond, 0.0).cross_attn, cond.cross_attn)
    learned = jnp.ones((8, DIM))
    np.testing.assert_array_equal(cfg_dropout(jax.random.key(1), cond, 1.0, learned).cross_attn,
                                  jnp.ones_like(cond.cross_attn))


# ------------------------------------------------------------------ the assembled conditioning vs diffusers


class _Captured(Exception):
    pass


@pytest.fixture(scope="module")
def pipeline(projection):
    torch.manual_seed(1)
    vae = AutoencoderOobleck(encoder_hidden_size=16, downsampling_ratios=[2, 4, 2], channel_multiples=[1, 2, 2],
                             decoder_channels=16, decoder_input_channels=8, audio_channels=2)
    t5 = T5EncoderModel(T5Config(vocab_size=100, d_model=DIM, d_kv=8, d_ff=48, num_layers=2, num_heads=4)).eval()
    dit = StableAudioDiTModel(sample_size=65536, in_channels=8, num_layers=1, attention_head_dim=8,
                              num_attention_heads=8, num_key_value_attention_heads=4, out_channels=8,
                              cross_attention_dim=DIM, time_proj_dim=16, global_states_input_dim=2 * DIM,
                              cross_attention_input_dim=DIM)
    pipe = StableAudioPipeline(vae=vae, text_encoder=t5, projection_model=projection, tokenizer=None,
                               transformer=dit, scheduler=EDMDPMSolverMultistepScheduler())
    return pipe


def _diffusers_conditioning(pipe, **kwargs):
    """Runs the real pipeline up to the first denoiser call and captures what it feeds the transformer."""
    captured = {}

    def capture(*args, **kw):
        captured.update(kw)
        raise _Captured

    original = pipe.transformer.forward
    pipe.transformer.forward = capture
    try:
        with pytest.raises(_Captured):
            pipe(num_inference_steps=2, guidance_scale=7.0, **kwargs)
    finally:
        pipe.transformer.forward = original
    return captured["encoder_hidden_states"].numpy(), captured["global_hidden_states"].numpy()


def _ours(pipe, projection):
    t5 = pipe.text_encoder
    module = t5_from_config(t5_config_from_hf(t5.config.to_dict()))
    encoder = T5TextEncoder(module, t5_params_from_state_dict(_state(t5), module), max_length=10)
    timing = TimingConditioner(features=DIM)
    timing_params = timing_params_from_state_dict(_state(projection), timing, "diffusers")
    return encoder, lambda s, e: timing.apply(timing_params, jnp.asarray(s), jnp.asarray(e))


@pytest.mark.parametrize("with_negative", [False, True])
def test_assembled_conditioning_matches_the_diffusers_pipeline(pipeline, projection, with_negative):
    rng = np.random.default_rng(2)
    ids = rng.integers(3, 100, (2, 10)).astype(np.int32)
    mask = np.ones((2, 10), bool)
    mask[0, 6:] = False
    neg_ids = rng.integers(3, 100, (2, 10)).astype(np.int32)
    neg_mask = np.ones((2, 10), bool)
    neg_mask[1, 2:] = False
    t5 = pipeline.text_encoder
    with torch.no_grad():  # the raw T5 hidden states, as the pipeline's own text encoder would produce them
        hidden = t5(torch.from_numpy(ids.astype(np.int64)), attention_mask=torch.from_numpy(mask.astype(np.int64)))[0]
        neg_hidden = t5(torch.from_numpy(neg_ids.astype(np.int64)),
                        attention_mask=torch.from_numpy(neg_mask.astype(np.int64)))[0]
    kwargs = dict(prompt_embeds=hidden, attention_mask=torch.from_numpy(mask.astype(np.int64)),
                  audio_start_in_s=1.5, audio_end_in_s=20.0)
    if with_negative:
        kwargs.update(negative_prompt_embeds=neg_hidden,
                      negative_attention_mask=torch.from_numpy(neg_mask.astype(np.int64)))
    cross_ref, global_ref = _diffusers_conditioning(pipeline, **kwargs)

    encoder, timing = _ours(pipeline, projection)
    start, total = timing(np.full(2, 1.5, np.float32), np.full(2, 20.0, np.float32))
    cond = assemble_conditioning(encoder.encode(ids, mask), mask, (start, total), (start, total))
    uncond = (negative_conditioning(cond, encoder.encode(neg_ids, neg_mask), neg_mask) if with_negative
              else null_conditioning(cond))
    both: Conditioning = guidance_batch(uncond, cond)  # diffusers orders the batch [uncond; cond]
    assert cross_ref.shape == both.cross_attn.shape == (4, 12, DIM)
    assert np.abs(np.asarray(both.cross_attn) - cross_ref).max() <= 1e-4
    assert np.abs(np.asarray(both.global_cond) - global_ref[:, 0]).max() <= 1e-5
    assert np.abs(cross_ref).max() > 0.5


def test_sao_conditioning_config():
    sao = {"model": {"conditioning": {"cond_dim": 768, "configs": [
        {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": 128}},
        {"id": "seconds_start", "type": "number", "config": {"min_val": 0, "max_val": 512}},
        {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 512}}]},
        "diffusion": {"cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                      "global_cond_ids": ["seconds_start", "seconds_total"]}}}
    cfg = conditioning_config_from_stable_audio_tools(sao)
    assert cfg.text.type == "t5" and cfg.text.model_name == "t5-base" and cfg.text.max_length == 128
    assert cfg.timing.style == "number" and cfg.timing.features == 768 and cfg.timing.max_val == 512.0
    assert list(cfg.cross_attention_ids) == ["prompt", "seconds_start", "seconds_total"]
    sao["model"]["conditioning"]["configs"][2]["config"]["max_val"] = 256
    with pytest.raises(ValueError, match="different bounds"):
        conditioning_config_from_stable_audio_tools(sao)
