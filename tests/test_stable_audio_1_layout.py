"""A stable-audio-tools checkpoint of the Stable Audio 1.0 layout (CLAP + 1-D U-Net + DAC-based VAE, integer
timing embeddings through cross-attention only), random weights under the reference's key names (the real one is
not public): `convert` → `generate`."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from dac_reference import dac_model
from helpers import roberta_vocab, synthetic_state_dict

from stableaudio_jax.cli import main
from stableaudio_jax.store import load_diffusion, load_vae, read_info

pytestmark = pytest.mark.parity


DATA = "tests/data/unet_reference.npz"
COND = 32  # the tiny U-Net's context width = CLAP width (one 32-wide head) = cond_dim


def _state_and_config(tmp_path):
    data = dict(np.load(DATA))
    unet_cfg = dict(json.loads(str(data["config"])), context_embedding_max_length=79)  # 77 CLAP + 2 timing
    shapes = dict(json.loads(str(data["shapes"])), **{"fixed_embedding.embedding.weight": [79, COND]})
    state = {f"model.model.{k}": v for k, v in synthetic_state_dict(shapes, seed=1).items()}
    dac = dac_model()
    torch.manual_seed(4)
    encoder = dac.Encoder(4, [2, 4], 16)  # d_latent = d_model * 2^blocks, as DACEncoderWrapper builds it
    encoder.block[0] = dac.WNConv1d(2, 4, kernel_size=7, padding=3)
    proj_out = torch.nn.Conv1d(16, 16, kernel_size=1)
    decoder = dac.Decoder(8, 16, [4, 2], d_out=2)
    parts = (("encoder.encoder.", encoder), ("encoder.proj_out.", proj_out), ("decoder.decoder.", decoder))
    for prefix, module in parts:
        state.update({f"pretransform.model.{prefix}{k}": v.numpy() for k, v in module.state_dict().items()})
    from transformers import RobertaConfig, RobertaModel
    branch = RobertaModel(RobertaConfig(vocab_size=320, hidden_size=COND, num_hidden_layers=2, num_attention_heads=1,
                                        intermediate_size=64, max_position_embeddings=90, type_vocab_size=1,
                                        pad_token_id=1, layer_norm_eps=1e-5))
    projection = torch.nn.Sequential(torch.nn.Linear(COND, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16))
    clap = "conditioner.conditioners.prompt.model.model."
    state.update({f"{clap}text_branch.{k}": v.numpy() for k, v in branch.state_dict().items()})
    state.update({f"{clap}text_projection.{k}": v.numpy() for k, v in projection.state_dict().items()})
    rng = np.random.default_rng(5)
    for name in ("seconds_start", "seconds_total"):
        state[f"conditioner.conditioners.{name}.int_embedder.weight"] = rng.standard_normal((513, COND)).astype(
            np.float32)
    config = {"model_type": "diffusion_cond", "sample_size": 8 * 64, "sample_rate": 44100, "audio_channels": 2,
              "model": {
                  "pretransform": {"type": "autoencoder", "config": {
                      "encoder": {"type": "dac", "config": {"in_channels": 2, "latent_dim": 16, "d_model": 4,
                                                            "strides": [2, 4]}},
                      "decoder": {"type": "dac", "config": {"out_channels": 2, "latent_dim": 8, "channels": 16,
                                                            "rates": [4, 2]}},
                      "bottleneck": {"type": "vae"}, "latent_dim": 8, "downsampling_ratio": 8, "io_channels": 2}},
                  "conditioning": {"cond_dim": COND, "configs": [
                      {"id": "prompt", "type": "clap_text", "config": {
                          "audio_model_type": "HTSAT-base", "enable_fusion": True, "use_text_features": True,
                          "feature_layer_ix": -2, "finetune": True}},
                      {"id": "seconds_start", "type": "int", "config": {"min_val": 0, "max_val": 512}},
                      {"id": "seconds_total", "type": "int", "config": {"min_val": 0, "max_val": 512}}]},
                  "diffusion": {"type": "adp_cfg_1d", "cross_attention_cond_ids": ["prompt", "seconds_start",
                                                                                   "seconds_total"],
                                "config": unet_cfg},
                  "io_channels": 8}}
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    return decoder


def test_a_stable_audio_1_layout_converts_and_generates(tmp_path):
    decoder = _state_and_config(tmp_path)
    vocab = roberta_vocab(tmp_path / "roberta")
    out = tmp_path / "sa1"
    assert main(["convert", "--from", "stable-audio-tools", "--checkpoint", str(tmp_path / "model.safetensors"),
                 "--model-config", str(tmp_path / "model_config.json"), "--clap-tokenizer", str(vocab),
                 "--out", str(out)]) == 0
    assert read_info(out / "vae").config.type == "dac_vae"
    diffusion = load_diffusion(out)
    assert diffusion.config.model.type == "unet1d" and diffusion.config.conditioning.timing.style == "int"
    assert not diffusion.model.zero_padded_text
    # the converted DAC VAE decodes as descript-audio-codec's own Decoder it was written from (same random weights)
    vae = load_vae(out / "vae")
    latents = np.random.default_rng(0).standard_normal((2, 16, 8)).astype(np.float32)
    ours = np.asarray(vae.module.apply(vae.params, latents, method=type(vae.module).decode))
    with torch.no_grad():
        want = decoder(torch.from_numpy(latents.transpose(0, 2, 1).copy())).numpy().transpose(0, 2, 1)
    assert ours.shape == want.shape == (2, 128, 2) and np.abs(want).max() > 1e-3
    np.testing.assert_allclose(ours, want, atol=1e-4)
    wav = tmp_path / "gen.wav"
    assert main(["generate", "a dog barking", "--checkpoint", str(out), "--out", str(wav), "--steps", "3",
                 "--seconds", "0.01", "--no-progress"]) == 0
    audio, rate = sf.read(wav)
    assert rate == 44100 and audio.shape == (441, 2) and np.isfinite(audio).all()
