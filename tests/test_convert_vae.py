"""Parity of the converted VAE with diffusers' AutoencoderOobleck (the PyTorch reference), through both the
diffusers and the stable-audio-tools key layouts, and the converter's error reporting."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderOobleck
from helpers import vae_key_to_sat
from safetensors.numpy import save_file

from stableaudio_jax.config_loader import load_config
from stableaudio_jax.convert import (CheckpointMismatchError, load_vae_diffusers, load_vae_stable_audio_tools,
                                     read_state_dict, vae_config_from_diffusers, vae_config_from_stable_audio_tools,
                                     vae_params_from_state_dict)
from stableaudio_jax.models.autoencoder import OobleckVAE, vae_from_config

pytestmark = pytest.mark.parity


STRIDES = [2, 4, 2]
SMALL = dict(encoder_hidden_size=16, downsampling_ratios=STRIDES, channel_multiples=[1, 2, 2],
             decoder_channels=16, decoder_input_channels=8, audio_channels=2, sampling_rate=44100)


@pytest.fixture(scope="module")
def reference():
    """A small diffusers AutoencoderOobleck with every parameter randomised, plus reference outputs."""
    torch.manual_seed(0)
    model = AutoencoderOobleck(**SMALL).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("alpha", "beta")):
                p.copy_(0.5 * torch.randn_like(p))  # log-scale Snake params, far from their zero init
            elif name.endswith("weight_g"):
                p.copy_(p * (1 + 0.5 * torch.rand_like(p)))
            else:
                p.add_(0.05 * torch.randn_like(p))
    audio = torch.randn(2, 2, 16 * 20)
    latents = torch.randn(2, 8, 24)
    with torch.no_grad():
        posterior = model.encode(audio).latent_dist
        out = dict(mean=posterior.mean.numpy(), std=posterior.std.numpy(), kl=float(posterior.kl()),
                   decoded=model.decode(latents).sample.numpy())
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return model, state, audio.numpy(), latents.numpy(), out


def _to_btc(x):
    return jnp.asarray(np.ascontiguousarray(x.transpose(0, 2, 1)))


def _check_parity(vae, params, ref):
    _, _, audio, latents, out = ref
    post = jax.jit(lambda p, a: vae.apply(p, a, method=OobleckVAE.encode_posterior))(params, _to_btc(audio))
    decoded = jax.jit(lambda p, z: vae.apply(p, z, method=OobleckVAE.decode))(params, _to_btc(latents))
    assert np.abs(np.asarray(post.mean).transpose(0, 2, 1) - out["mean"]).max() <= 1e-4
    assert np.abs(np.asarray(post.std).transpose(0, 2, 1) - out["std"]).max() <= 1e-4
    assert np.abs(np.asarray(decoded).transpose(0, 2, 1) - out["decoded"]).max() <= 1e-4
    np.testing.assert_allclose(float(post.kl()), out["kl"], rtol=1e-4)
    # the outputs are not trivially small: the comparison means something
    assert np.abs(out["mean"]).max() > 0.1 and np.abs(out["decoded"]).max() > 0.1


def _small_vae():
    return vae_from_config(vae_config_from_diffusers(SMALL))


def test_diffusers_parity(reference):
    vae = _small_vae()
    _check_parity(vae, vae_params_from_state_dict(reference[1], vae, "diffusers"), reference)


def test_diffusers_directory(reference, tmp_path):
    reference[0].save_pretrained(tmp_path / "vae")  # a pipeline layout: <dir>/vae/{config.json, *.safetensors}
    model_cfg, params = load_vae_diffusers(tmp_path)
    assert tuple(model_cfg.strides) == tuple(STRIDES) and model_cfg.latent_dim == 8
    _check_parity(vae_from_config(model_cfg), params, reference)


def _sat_state(state):
    out = {}
    for key, value in state.items():
        value = value.reshape(-1) if key.endswith(("alpha", "beta")) else value  # SAT stores Snake params as [C]
        out["pretransform.model." + vae_key_to_sat(key, len(STRIDES))] = np.ascontiguousarray(value)
    return out


def _sat_model_config():
    oobleck = dict(channels=16, c_mults=[1, 2, 2], strides=STRIDES, use_snake=True)
    return {"model_type": "diffusion_cond", "sample_rate": 44100, "audio_channels": 2, "model": {"pretransform": {
        "type": "autoencoder", "config": {
            "encoder": {"type": "oobleck", "config": dict(oobleck, in_channels=2, latent_dim=16)},
            "decoder": {"type": "oobleck", "config": dict(oobleck, out_channels=2, latent_dim=8, final_tanh=False)},
            "bottleneck": {"type": "vae"}, "latent_dim": 8, "downsampling_ratio": 16, "io_channels": 2}}}}


def test_stable_audio_tools_layout_parity(reference, tmp_path):
    state = _sat_state(reference[1])
    assert "pretransform.model.encoder.layers.1.layers.0.layers.1.weight_v" in state
    assert "pretransform.model.decoder.layers.1.layers.1.weight_g" in state  # the transposed conv
    # a full SAO checkpoint also holds the DiT and conditioners: the VAE loader reads only its own prefix
    state["model.model.transformer.project_in.weight"] = np.zeros((4, 8), np.float32)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    config_path = tmp_path / "model_config.json"
    config_path.write_text(json.dumps(_sat_model_config()))
    model_cfg, params = load_vae_stable_audio_tools(path, config_path)
    assert model_cfg.activation == "snake" and model_cfg.final_tanh is False
    _check_parity(vae_from_config(model_cfg), params, reference)


def test_stable_audio_tools_ckpt_with_torch(reference, tmp_path):
    state = {k[len("pretransform.model."):]: torch.from_numpy(v) for k, v in _sat_state(reference[1]).items()}
    path = tmp_path / "vae_model.ckpt"
    torch.save({"state_dict": state, "global_step": 10}, path)  # an unwrapped autoencoder checkpoint
    model_cfg, params = load_vae_stable_audio_tools(path, _sat_model_config())
    _check_parity(vae_from_config(model_cfg), params, reference)


def test_new_style_parametrize_and_folded_weights(reference):
    vae = _small_vae()
    renamed = {}
    for i, (key, value) in enumerate(reference[1].items()):
        if key.endswith("weight_g") and i % 2:
            renamed[key.replace("weight_g", "parametrizations.weight.original0")] = value
        elif key.endswith("weight_v") and i % 2:
            renamed[key.replace("weight_v", "parametrizations.weight.original1")] = value
        else:
            renamed[key] = value
    _check_parity(vae, vae_params_from_state_dict(renamed, vae, "diffusers"), reference)
    # weight norm removed (W folded): v = W, g = ||W|| reproduces it exactly
    folded = {}
    for key, value in reference[1].items():
        if key.endswith("weight_v"):
            g = reference[1][key.replace("weight_v", "weight_g")]
            v64 = value.astype(np.float64)
            folded[key.replace("weight_v", "weight")] = (g * v64 / np.sqrt((v64 ** 2).sum((1, 2), keepdims=True))
                                                         ).astype(np.float32)
        elif not key.endswith("weight_g"):
            folded[key] = value
    _check_parity(vae, vae_params_from_state_dict(folded, vae, "diffusers"), reference)


def test_mismatches_are_all_listed(reference):
    vae = _small_vae()
    state = dict(reference[1])
    del state["decoder.block.1.res_unit2.conv1.bias"]
    state["encoder.block.0.res_unit9.conv1.bias"] = np.zeros(16, np.float32)
    state["encoder.conv1.weight_v"] = np.zeros((16, 3, 7), np.float32)
    with pytest.raises(CheckpointMismatchError) as info:
        vae_params_from_state_dict(state, vae, "diffusers", source="vae.safetensors")
    err = info.value
    assert err.missing == ["decoder.block.1.res_unit2.conv1.bias"]
    assert err.unexpected == ["encoder.block.0.res_unit9.conv1.bias"]
    assert len(err.mismatched) == 1 and err.mismatched[0].startswith("encoder.conv1.weight_v")
    message = str(err)
    assert "vae.safetensors" in message and "1 missing keys" in message and "1 unexpected keys" in message
    assert "(7, 3, 16)" in message and "(7, 2, 16)" in message


def test_sao_configs_convert_to_ours():
    oobleck = dict(channels=128, c_mults=[1, 2, 4, 8, 16], strides=[2, 4, 4, 8, 8], use_snake=True)
    sao = {"sample_rate": 44100, "model": {"pretransform": {"type": "autoencoder", "config": {
        "encoder": {"type": "oobleck", "config": dict(oobleck, in_channels=2, latent_dim=128)},
        "decoder": {"type": "oobleck", "config": dict(oobleck, out_channels=2, latent_dim=64, final_tanh=False)},
        "bottleneck": {"type": "vae"}, "latent_dim": 64, "downsampling_ratio": 2048, "io_channels": 2}}}}
    ours = dict(load_config("configs/vae.py:sao").model)
    assert dict(vae_config_from_stable_audio_tools(sao)) == ours
    diffusers_sao = dict(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 8, 8],
                         channel_multiples=[1, 2, 4, 8, 16], decoder_channels=128, decoder_input_channels=64,
                         audio_channels=2, sampling_rate=44100)
    assert dict(vae_config_from_diffusers(diffusers_sao)) == ours
    sao["model"]["pretransform"]["config"]["decoder"]["config"]["use_nearest_upsample"] = True
    with pytest.raises(ValueError, match="decoder.config.use_nearest_upsample is true; not supported"):
        vae_config_from_stable_audio_tools(sao)


def test_read_state_dict_bfloat16_and_bad_paths(tmp_path):
    import safetensors.torch
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file({"a": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)}, str(path))
    state = read_state_dict(path)
    np.testing.assert_array_equal(state["a"].astype(np.float32), np.arange(6).reshape(2, 3))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "missing.safetensors")
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown checkpoint format"):
        read_state_dict(tmp_path / "w.npz")
    with pytest.raises(ValueError, match="no VAE tensors found"):
        load_vae_stable_audio_tools(path, _sat_model_config())
