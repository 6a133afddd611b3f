"""Loading a complete Stable Audio Open style checkpoint (VAE + DiT + timing conditioners) from the
stable-audio-tools layout and from a diffusers pipeline directory; every part checked against the PyTorch modules."""
import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderOobleck
from diffusers.pipelines.stable_audio import StableAudioProjectionModel
from helpers import diffusers_dit_forward, randomized_diffusers_dit, sat_model_config, write_sat_checkpoint

from stableaudio_jax.convert import CheckpointMismatchError, load_diffusers, load_stable_audio_tools

pytestmark = pytest.mark.parity


COND = 128  # cross-attention token width = 2 key/value heads x 64: SAO's grouped-query structure at toy size
VAE = dict(encoder_hidden_size=16, downsampling_ratios=[2, 4, 2], channel_multiples=[1, 2, 2], decoder_channels=16,
           decoder_input_channels=8, audio_channels=2, sampling_rate=44100)


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    vae = AutoencoderOobleck(**VAE).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith(("alpha", "beta")):
                p.copy_(0.3 * torch.randn_like(p))
    # stable-audio-tools fixes the timestep features at 256
    dit = randomized_diffusers_dit(seed=1, cross_attention_input_dim=COND, cross_attention_dim=COND,
                                   global_states_input_dim=2 * COND, time_proj_dim=256)
    projection = StableAudioProjectionModel(text_encoder_dim=COND, conditioning_dim=COND, min_value=0,
                                            max_value=512).eval()
    return dict(vae=vae, transformer=dit, projection_model=projection)


def _check_bundle(bundle, parts):
    vae, dit, projection = parts["vae"], parts["transformer"], parts["projection_model"]
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((2, 16 * 24, 2)).astype(np.float32)
    with torch.no_grad():
        mean = vae.encode(torch.from_numpy(audio.transpose(0, 2, 1).copy())).latent_dist.mean.numpy()
    latents = np.asarray(bundle.vae.encode(audio))
    assert latents.shape == (2, 24, 8) and np.abs(latents - mean.transpose(0, 2, 1)).max() <= 1e-4
    with torch.no_grad():
        decoded = vae.decode(torch.from_numpy(mean)).sample.numpy().transpose(0, 2, 1)
    assert np.abs(np.asarray(bundle.vae.decode(latents)) - decoded).max() <= 1e-4

    start, total = np.array([0.0, 7.5], np.float32), np.array([30.0, 600.0], np.float32)
    cross_tokens, global_cond = bundle.timing(start, total)
    with torch.no_grad():
        out = projection(start_seconds=torch.from_numpy(start), end_seconds=torch.from_numpy(total))
    ref_tokens = torch.cat([out.seconds_start_hidden_states, out.seconds_end_hidden_states], 1).numpy()
    assert cross_tokens.shape == (2, 2, COND) and np.abs(np.asarray(cross_tokens) - ref_tokens).max() <= 1e-5
    np.testing.assert_allclose(global_cond, ref_tokens.reshape(2, 2 * COND), atol=1e-5)

    text = rng.standard_normal((2, 5, COND)).astype(np.float32)
    cross = np.concatenate([text, np.asarray(cross_tokens)], axis=1)
    x, t = latents, np.array([0.3, 0.9], np.float32)
    want = diffusers_dit_forward(dit, x, t, cross, np.asarray(global_cond))
    assert np.abs(np.asarray(bundle.dit(x, t, cross, global_cond)) - want).max() <= 1e-4
    both = diffusers_dit_forward(dit, np.concatenate([x, x]), np.concatenate([t, t]),
                                 np.concatenate([cross, np.zeros_like(cross)]), np.concatenate([global_cond] * 2))
    guided = both[2:] + (both[:2] - both[2:]) * 7.0
    assert np.abs(np.asarray(bundle.dit(x, t, cross, global_cond, cfg_scale=7.0)) - guided).max() <= 1e-4


def test_load_stable_audio_tools(parts, tmp_path):
    path = write_sat_checkpoint(parts, tmp_path / "model.safetensors")
    config = tmp_path / "model_config.json"
    config.write_text(json.dumps(sat_model_config(COND)))
    bundle = load_stable_audio_tools(path, config)
    assert bundle.config.audio.sample_rate == 44100 and bundle.config.dit.cond_embed_dim == COND
    assert set(bundle.params) == {"vae", "dit", "timing"}
    _check_bundle(bundle, parts)


def test_sat_checkpoint_errors(parts, tmp_path):
    path = write_sat_checkpoint(parts, tmp_path / "model.safetensors",
                           extra={"discriminator.conv.weight": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointMismatchError, match="discriminator.conv.weight"):
        load_stable_audio_tools(path, sat_model_config(COND))
    path = write_sat_checkpoint(parts, tmp_path / "ok.safetensors")
    config = sat_model_config(COND)
    config["model"]["diffusion"]["config"]["global_cond_type"] = "adaLN"
    with pytest.raises(ValueError, match=r"model.diffusion.config.global_cond_type='adaLN' is not supported"):
        load_stable_audio_tools(path, config)
    config = sat_model_config(COND)
    config["model"]["diffusion"]["global_cond_ids"] = ["seconds_total"]
    with pytest.raises(ValueError, match=r"global_cond_ids \['seconds_total'\] are not supported"):
        load_stable_audio_tools(path, config)


def test_load_diffusers_directory(parts, tmp_path):
    vae, dit, projection = parts["vae"], parts["transformer"], parts["projection_model"]
    vae.save_pretrained(tmp_path / "vae")
    dit.save_pretrained(tmp_path / "transformer")
    projection.save_pretrained(tmp_path / "projection_model")
    bundle = load_diffusers(tmp_path)
    assert bundle.config.dit.rotary_dim == 32 and bundle.config.audio.sample_size == 32 * 16
    _check_bundle(bundle, parts)
    with pytest.raises(FileNotFoundError, match="transformer/ needs config.json"):
        load_diffusers(tmp_path / "vae")


@pytest.fixture(scope="module")
def projected(parts):
    """The same modules with a text projection: T5 width 96 → cond_dim 128 (stable-audio-tools' proj_out)."""
    torch.manual_seed(3)
    projection = StableAudioProjectionModel(text_encoder_dim=96, conditioning_dim=COND, min_value=0,
                                            max_value=512).eval()
    with torch.no_grad():
        for p in projection.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return dict(parts, projection_model=projection)


def _check_projection(bundle, projection):
    text = np.random.default_rng(1).standard_normal((2, 5, 96)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    with torch.no_grad():
        want = projection(text_hidden_states=torch.from_numpy(text)).text_hidden_states.numpy() * mask[..., None]
    got = np.asarray(bundle.text_projection(text, mask))
    assert got.shape == (2, 5, COND) and np.abs(got - want).max() <= 1e-5


def test_a_t5_projection_converts_from_both_layouts(projected, tmp_path):
    path = write_sat_checkpoint(projected, tmp_path / "model.safetensors")
    bundle = load_stable_audio_tools(path, sat_model_config(COND))
    assert set(bundle.params) == {"vae", "dit", "timing", "text_projection"}
    assert bundle.config.conditioning.text.width == 96 and bundle.config.conditioning.cond_dim == COND
    _check_projection(bundle, projected["projection_model"])
    _check_bundle(bundle, projected)  # the rest is unchanged
    for name in ("vae", "transformer", "projection_model"):
        projected[name].save_pretrained(tmp_path / "diffusers" / name)
    bundle = load_diffusers(tmp_path / "diffusers")
    assert bundle.config.conditioning.text.width == 96
    _check_projection(bundle, projected["projection_model"])


def test_projection_errors(parts, projected, tmp_path):
    # a config asking for a projection (project_out) on a checkpoint without one
    plain = write_sat_checkpoint(parts, tmp_path / "plain.safetensors")
    config = sat_model_config(COND)
    config["model"]["conditioning"]["configs"][0]["config"]["project_out"] = True
    with pytest.raises(CheckpointMismatchError, match=r"2 missing keys:\n.*prompt.proj_out.weight"):
        load_stable_audio_tools(plain, config)
    # a half-present projection
    from safetensors.numpy import load_file, save_file
    state = load_file(str(write_sat_checkpoint(projected, tmp_path / "proj.safetensors")))
    del state["conditioner.conditioners.prompt.proj_out.bias"]
    save_file(state, str(tmp_path / "half.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="prompt.proj_out.bias"):
        load_stable_audio_tools(tmp_path / "half.safetensors", sat_model_config(COND))
    # a conditioner kind the converter does not know
    config = sat_model_config(COND)
    config["model"]["conditioning"]["configs"][0]["type"] = "phoneme"
    with pytest.raises(ValueError, match=r"model_config.json: the 'prompt' conditioner is of type 'phoneme'"):
        load_stable_audio_tools(plain, config)


def test_broken_weight_and_config_files_are_named(parts, tmp_path):
    from stableaudio_jax.convert import read_state_dict
    path = write_sat_checkpoint(parts, tmp_path / "model.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.safetensors: unreadable safetensors file .*truncated or corrupt"):
        load_stable_audio_tools(tmp_path / "cut.safetensors", sat_model_config(COND))
    (tmp_path / "noise.ckpt").write_bytes(b"\x80\x04not a pickle at all" * 10)
    with pytest.raises(ValueError, match=r"noise.ckpt: unreadable PyTorch checkpoint"):
        read_state_dict(tmp_path / "noise.ckpt")
    (tmp_path / "model_config.json").write_text("{ not json")
    with pytest.raises(ValueError, match=r"model_config.json: unreadable model config file"):
        load_stable_audio_tools(path, tmp_path / "model_config.json")
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text('{"d_model": 8,')
    from stableaudio_jax.convert import load_hf_t5
    with pytest.raises(ValueError, match=r"t5/config.json: unreadable T5 config file"):
        load_hf_t5(t5, require_tokenizer=False)
