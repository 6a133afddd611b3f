"""The text-to-audio pipeline end to end: parity with diffusers' StableAudioPipeline driving the same deterministic
DPM-Solver++(2M) over the same random tiny modules, no recompilation, checkpoints, and bad input."""
import math

import jax
import numpy as np
import pytest
import torch
from diffusers import EDMDPMSolverMultistepScheduler, StableAudioPipeline
from helpers import build_tiny_sao_diffusers
from stableaudio_jax.inference.pipeline import TextToAudioPipeline
from stableaudio_jax.store import StoreError

D = 32          # T5 width = conditioning width, as SAO (768 there)
FRAMES = 32     # latent frames in the window
PROMPTS = ["a dog barking in the rain", "slow ambient synth pad"]


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    root = tmp_path_factory.mktemp("sao_tiny")
    return root, build_tiny_sao_diffusers(root, D, FRAMES, PROMPTS)


@pytest.fixture(scope="module")
def pipe(components):
    return TextToAudioPipeline.from_diffusers(components[0], max_length=16)


def _reference_audio(components, pipe, noise, steps, cfg_scale, seconds_start, seconds_total):
    """diffusers' StableAudioPipeline with a deterministic DPM-Solver++(2M) EDM scheduler whose noise
    preconditioning is SAO's t = atan(sigma) * 2 / pi (the scheduler's default is 0.25 log sigma)."""
    _, parts = components
    scheduler = EDMDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500.0, sigma_data=1.0,
                                               sigma_schedule="exponential", prediction_type="v_prediction",
                                               algorithm_type="dpmsolver++", solver_order=2)
    scheduler.precondition_noise = lambda sigma: torch.as_tensor(sigma).atan() / math.pi * 2
    reference = StableAudioPipeline(tokenizer=None, scheduler=scheduler, **parts)
    ids, mask = pipe.text.tokenize(PROMPTS)
    with torch.no_grad():
        hidden = parts["text_encoder"](torch.from_numpy(ids.astype(np.int64)),
                                       attention_mask=torch.from_numpy(mask.astype(np.int64)))[0]
        # diffusers scales the given latents by init_noise_sigma = sqrt(sigma_max^2 + 1); ours by sigma_max
        latents = torch.from_numpy(noise.transpose(0, 2, 1).copy()) * (500.0 / math.sqrt(500.0 ** 2 + 1))
        out = reference(prompt_embeds=hidden, attention_mask=torch.from_numpy(mask.astype(np.int64)),
                        audio_start_in_s=seconds_start, audio_end_in_s=seconds_total, num_inference_steps=steps,
                        guidance_scale=cfg_scale, latents=latents, output_type="pt").audios
    return out.numpy().transpose(0, 2, 1)


def test_end_to_end_parity_with_diffusers(components, pipe):
    noise = np.random.default_rng(0).standard_normal((2, FRAMES, 8)).astype(np.float32)
    window = pipe.window_seconds
    ours = pipe.generate(PROMPTS, steps=20, cfg_scale=7.0, sampler="dpmpp-2m", sigma_min=0.3, sigma_max=500.0,
                         seconds_start=0.0, seconds_total=window, initial_noise=noise)
    reference = _reference_audio(components, pipe, noise, 20, 7.0, 0.0, window)
    assert ours.shape == reference.shape == (2, FRAMES * 16, 2) and ours.dtype == np.float32
    snr = 10 * np.log10(np.sum(reference ** 2) / np.sum((ours - reference) ** 2))
    print(f"end-to-end SNR vs diffusers: {snr:.1f} dB")
    assert snr >= 40.0, snr
    assert np.abs(reference).max() > 0.05


def test_no_recompilation_across_prompts_scales_seeds_durations(pipe):
    from stableaudio_jax.inference import pipeline as module
    pipe.generate(PROMPTS, steps=4, cfg_scale=3.0, seed=0, seconds_total=0.005)
    before = module._sample_latents._cache_size()
    decode_before = module._decode._cache_size()
    pipe.generate(["rain on a tin roof", "a crowd cheering"], negative_prompt=None, steps=4, cfg_scale=7.5,
                  seed=123, seconds_start=[0.0, 1.0], seconds_total=[0.011, 0.003], sigma_min=0.5, sigma_max=80.0,
                  cfg_rescale=0.5)
    pipe.generate(PROMPTS[::-1], steps=4, cfg_scale=2.0, seed=7, seconds_total=0.01)
    assert module._sample_latents._cache_size() == before
    assert module._decode._cache_size() == decode_before
    # cfg_scale 1 without a negative prompt is the conditional prediction alone: one compile of the one-pass
    # program, then no more
    pipe.generate(PROMPTS, steps=4, cfg_scale=1.0, seed=1, seconds_total=0.01)
    pipe.generate(PROMPTS[::-1], steps=4, cfg_scale=1.0, seed=2, seconds_total=0.005)
    assert module._sample_latents._cache_size() == before + 1


def test_generate_is_seeded_and_crops_to_each_duration(pipe):
    a = pipe.generate(PROMPTS, steps=4, seed=3, seconds_total=[0.011, 0.005])
    b = pipe.generate(PROMPTS, steps=4, seed=3, seconds_total=[0.011, 0.005])
    c = pipe.generate(PROMPTS, steps=4, seed=4, seconds_total=[0.011, 0.005])
    np.testing.assert_array_equal(a, b)
    assert float(np.abs(a - c).max()) > 1e-4
    assert a.shape == (2, round(0.011 * 44100), 2)
    assert not a[1, round(0.005 * 44100):].any() and np.abs(a[1, :round(0.005 * 44100)]).max() > 0


def test_negative_prompt_changes_the_result(pipe):
    plain = pipe.generate(PROMPTS, steps=4, seed=1)
    negative = pipe.generate(PROMPTS, steps=4, seed=1, negative_prompt="a crowd cheering")
    assert plain.shape == negative.shape and float(np.abs(plain - negative).max()) > 1e-4


def test_audio_to_audio_and_inpainting(pipe):
    rng = np.random.default_rng(5)
    window = pipe.window_samples
    source = 0.3 * rng.standard_normal((window, 1)).astype(np.float32)  # mono: duplicated to stereo

    def latents(prompt, level):
        return pipe.generate([prompt], steps=8, sampler="dpmpp-2m", init_audio=source, init_noise_level=level,
                             sigma_min=0.001, seed=5, return_latents=True)[1]

    # with little noise the result is the (encoded) init whatever the prompt; with a lot, the prompt decides
    near = np.abs(latents(PROMPTS[0], 0.01) - latents(PROMPTS[1], 0.01)).mean()
    far = np.abs(latents(PROMPTS[0], 100.0) - latents(PROMPTS[1], 100.0)).mean()
    assert near < 0.05 * far, (near, far)
    stereo = np.repeat(source, 2, axis=1)[None]
    latents_of = lambda audio: np.asarray(pipe.vae.apply(pipe.params["vae"], audio, method=pipe.vae.encode))  # noqa
    # inpainting at the model's own rate and at another rate (the mask is resampled with the audio)
    mask = np.zeros(window, bool)
    mask[: window // 2] = True
    kept = pipe.generate(PROMPTS[:1], steps=8, inpaint_audio=stereo[0], inpaint_mask=mask, return_latents=True)[1]
    target = latents_of(stereo)
    frames = FRAMES // 2
    np.testing.assert_allclose(kept[0, :frames], target[0, :frames], atol=1e-4)
    assert np.abs(kept[0, frames + 1:] - target[0, frames + 1:]).mean() > 0.1
    half_rate = stereo[0, ::2]
    out = pipe.generate(PROMPTS[:1], steps=4, inpaint_audio=half_rate, inpaint_mask=mask[::2],
                        inpaint_audio_sample_rate=22050)
    assert out.shape == (1, window, 2)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(seconds_total=1.0), ValueError, r"seconds_total=1.0 exceeds the model's window of 0.01 s"),
    (dict(seconds_total=-2.0), ValueError, r"seconds_total=-2.0 must be > 0"),
    (dict(seconds_start=float("nan")), ValueError, r"seconds_start=nan is not finite"),
    (dict(seconds_start=-1.0), ValueError, r"seconds_start=-1.0 is negative"),
    (dict(sampler="euler"), ValueError, r"sampler 'euler' is not available for the 'v' objective"),
    (dict(inpaint_audio=np.zeros((100, 2)), inpaint_mask=np.ones(99)), ValueError,
     r"inpaint_mask has shape \(1, 99\); expected \[100\]"),
    (dict(inpaint_audio=np.zeros((100, 2))), ValueError, r"inpaint_audio and inpaint_mask must be given together"),
    (dict(init_audio=np.zeros((3, 4, 5, 6))), ValueError, r"init_audio has shape \(3, 4, 5, 6\)"),
    (dict(steps=0), ValueError, r"steps=0; expected a positive integer"),
    (dict(negative_prompt=["a", "b", "c"]), ValueError, r"negative_prompt has 3 entries for 2 prompts"),
    (dict(initial_noise=np.zeros((2, 5, 8))), ValueError, r"initial_noise has shape \(2, 5, 8\)"),
])
def test_bad_input_is_a_clear_error(pipe, kwargs, error, message):
    with pytest.raises(error, match=message):
        pipe.generate(PROMPTS, **{"steps": 2, **kwargs})


def test_checkpoint_round_trip(pipe, tmp_path):
    pipe.save(tmp_path / "model")
    loaded = TextToAudioPipeline.from_checkpoint(tmp_path / "model")
    a = pipe.generate(PROMPTS, steps=4, seed=2)
    b = loaded.generate(PROMPTS, steps=4, seed=2)
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(StoreError, match="already holds a stored model"):
        pipe.save(tmp_path / "model")
    with pytest.raises(StoreError, match="not a stableaudio-jax stored model"):
        TextToAudioPipeline.from_checkpoint(tmp_path)


def test_sharded_batch_equals_single_device(pipe):
    from stableaudio_jax.parallel.mesh import make_mesh
    sharded = TextToAudioPipeline(pipe.model, mesh=make_mesh({"data": 8}))
    prompts = PROMPTS + ["rain on a tin roof"]  # 3 prompts padded to the 8 data shards
    a = pipe.generate(prompts, steps=4, seed=9)
    b = sharded.generate(prompts, steps=4, seed=9)
    assert b.shape == a.shape == (3, FRAMES * 16, 2)
    np.testing.assert_allclose(a, b, atol=1e-4)  # the same computation, partitioned differently


def test_progress_reports_every_step(pipe):
    steps = []
    pipe.generate(PROMPTS[:1], steps=5, progress=steps.append)
    jax.effects_barrier()
    assert sorted(steps) == [0, 1, 2, 3, 4]


def test_window_can_be_changed(components):
    pipe = TextToAudioPipeline.from_diffusers(components[0], max_length=16)
    pipe.set_window_seconds(0.02)  # 882 samples → 56 latent frames of 16 samples
    assert pipe.latent_frames == 56 and pipe.window_samples == 896
    assert pipe.generate(PROMPTS[:1], steps=2).shape == (1, 896, 2)
    with pytest.raises(ValueError, match="window seconds=-1"):
        pipe.set_window_seconds(-1)


def test_a_t5_projection_model_matches_diffusers_end_to_end(tmp_path):
    """cond_dim 128 != T5 width 96: the stable-audio-tools checkpoint carries prompt.proj_out; converted, it
    generates what diffusers' StableAudioPipeline generates, and the diffusers folder converts to the same."""
    import json
    import shutil

    from helpers import sat_model_config, write_sat_checkpoint
    root = tmp_path / "projected"
    parts = build_tiny_sao_diffusers(root, 128, FRAMES, PROMPTS, text_dim=96)
    write_sat_checkpoint(parts, root / "model.safetensors")
    (root / "model_config.json").write_text(json.dumps(sat_model_config(128)))
    shutil.copytree(root / "text_encoder", root / "t5")
    shutil.copy(root / "tokenizer" / "spiece.model", root / "t5" / "spiece.model")
    sat = TextToAudioPipeline.from_pretrained_stable_audio(root / "model.safetensors", root / "model_config.json",
                                                          root / "t5")
    assert "text_projection" in sat.params["diffusion"] and sat.text.width == 96
    noise = np.random.default_rng(0).standard_normal((2, FRAMES, 8)).astype(np.float32)
    ours = sat.generate(PROMPTS, steps=10, cfg_scale=7.0, sampler="dpmpp-2m", seconds_total=sat.window_seconds,
                        initial_noise=noise)
    reference = _reference_audio((root, parts), sat, noise, 10, 7.0, 0.0, sat.window_seconds)
    snr = 10 * np.log10(np.sum(reference ** 2) / np.sum((ours - reference) ** 2))
    assert snr >= 40.0, snr
    converted = TextToAudioPipeline.from_diffusers(root, max_length=128)
    np.testing.assert_allclose(converted.generate(PROMPTS, steps=4, seed=1), sat.generate(PROMPTS, steps=4, seed=1),
                               atol=1e-5)


def test_two_pipelines_report_their_own_progress(pipe):
    """Progress callbacks are per call: two pipelines (and two threads) never receive each other's steps."""
    import threading
    other = TextToAudioPipeline(pipe.model)
    seen = {"a": [], "b": []}
    threads = [threading.Thread(target=p.generate, args=(PROMPTS[:1],), kwargs=dict(steps=n, progress=seen[k].append))
               for p, k, n in ((pipe, "a", 3), (other, "b", 6))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    jax.effects_barrier()
    assert sorted(seen["a"]) == [0, 1, 2] and sorted(seen["b"]) == list(range(6))
    plain = []
    pipe.generate(PROMPTS[:1], steps=2)  # no callback: nothing reaches the earlier ones
    other.generate(PROMPTS[:1], steps=2, progress=plain.append)
    jax.effects_barrier()
    assert len(seen["a"]) == 3 and len(seen["b"]) == 6 and sorted(plain) == [0, 1]
