"""Stable Audio 1.0's DAC-based VAE against the reference DAC encoder/decoder (descript-audio-codec, as
stable-audio-tools wraps them: a stereo first conv and a plain 1x1 ``proj_out``) on a small config, float32,
max abs error <= 1e-4; and the full-size model's parameter count."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from dac_reference import dac_model

from stableaudio_jax.convert.dac_vae import dac_vae_config_from_stable_audio_tools, load_dac_vae_stable_audio_tools
from stableaudio_jax.convert.state_dict import CheckpointMismatchError
from stableaudio_jax.models.autoencoder import count_params
from stableaudio_jax.models.dac_vae import DACVAE

pytestmark = pytest.mark.parity


SMALL = {"encoder": {"type": "dac", "config": {"in_channels": 2, "latent_dim": 16, "d_model": 4, "strides": [2, 4]}},
         "decoder": {"type": "dac", "config": {"out_channels": 2, "latent_dim": 8, "channels": 16, "rates": [4, 2]}},
         "bottleneck": {"type": "vae"}, "latent_dim": 8, "downsampling_ratio": 8, "io_channels": 2,
         "sample_rate": 44100}


def _reference():
    """stable-audio-tools' DACEncoderWrapper / DACDecoderWrapper built from the reference classes, with random
    (not initial) Snake alphas and weight-norm gains so that every parameter matters."""
    dac = dac_model()
    torch.manual_seed(0)
    enc_cfg, dec_cfg = SMALL["encoder"]["config"], SMALL["decoder"]["config"]
    width = enc_cfg["d_model"] * 2 ** len(enc_cfg["strides"])
    encoder = dac.Encoder(enc_cfg["d_model"], enc_cfg["strides"], width)
    encoder.block[0] = dac.WNConv1d(2, enc_cfg["d_model"], kernel_size=7, padding=3)
    proj_out = torch.nn.Conv1d(width, enc_cfg["latent_dim"], kernel_size=1)
    decoder = dac.Decoder(dec_cfg["latent_dim"], dec_cfg["channels"], dec_cfg["rates"], d_out=2)
    with torch.no_grad():
        for name, p in [*encoder.named_parameters(), *decoder.named_parameters()]:
            if name.endswith(("alpha", "weight_g")):
                p.mul_(0.5 + torch.rand_like(p))
    state = {f"pretransform.model.encoder.encoder.{k}": v.numpy() for k, v in encoder.state_dict().items()}
    state.update({f"pretransform.model.encoder.proj_out.{k}": v.numpy() for k, v in proj_out.state_dict().items()})
    state.update({f"pretransform.model.decoder.decoder.{k}": v.numpy() for k, v in decoder.state_dict().items()})
    return encoder.eval(), proj_out.eval(), decoder.eval(), state


def test_encoder_and_decoder_match_the_reference():
    encoder, proj_out, decoder, state = _reference()
    vae, params, config = load_dac_vae_stable_audio_tools(state, SMALL)
    assert config.type == "dac_vae" and vae.downsampling_ratio == 8
    audio = np.random.default_rng(0).uniform(-1, 1, (2, 2, 64)).astype(np.float32)  # [B, C, T], torch layout
    latents = np.random.default_rng(1).standard_normal((2, 8, 8)).astype(np.float32)
    with torch.no_grad():
        moments = proj_out(encoder(torch.from_numpy(audio))).numpy()
        decoded = decoder(torch.from_numpy(latents)).numpy()
    ours_moments = jax.jit(lambda p, a: vae.apply(p, a, method=DACVAE.encode_moments))(
        params, jnp.asarray(audio.transpose(0, 2, 1)))
    ours_decoded = jax.jit(lambda p, z: vae.apply(p, z, method=DACVAE.decode))(
        params, jnp.asarray(latents.transpose(0, 2, 1)))
    assert np.abs(np.asarray(ours_moments).transpose(0, 2, 1) - moments).max() <= 1e-4
    assert np.abs(np.asarray(ours_decoded).transpose(0, 2, 1) - decoded).max() <= 1e-4
    assert np.abs(decoded).max() <= 1.0  # DAC ends with tanh


def test_a_missing_tensor_is_named():
    *_, state = _reference()
    del state["pretransform.model.encoder.proj_out.bias"]
    del state["pretransform.model.decoder.decoder.model.1.block.2.block.0.alpha"]
    with pytest.raises(CheckpointMismatchError) as e:
        load_dac_vae_stable_audio_tools(state, SMALL)
    assert e.value.missing == ["decoder.decoder.model.1.block.2.block.0.alpha", "encoder.proj_out.bias"]
    with pytest.raises(ValueError, match="expected 'dac'"):
        dac_vae_config_from_stable_audio_tools(dict(SMALL, encoder={"type": "oobleck", "config": {}}))


def test_stable_audio_1_0_vae_size():
    """stable_audio_1_0_vae.json: 89.6 M encoder + 43.9 M decoder = 133.4 M parameters, 1024x downsampling."""
    vae = DACVAE()
    audio = jax.ShapeDtypeStruct((1, 1024, 2), jnp.float32)
    params = jax.eval_shape(lambda a: vae.init(jax.random.key(0), a, sample=False), audio)["params"]
    assert vae.downsampling_ratio == 1024
    assert round(count_params(params["encoder"]) / 1e5) == 896 and round(count_params(params["decoder"]) / 1e5) == 439
    assert round(count_params(params) / 1e5) == 1334


def test_chunked_decode_of_the_dac_vae_equals_the_full_decode():
    from stableaudio_jax.models.chunked_vae import chunked_decode, decoder_receptive_field
    vae = DACVAE(channels=4, strides=(2, 4), latent_dim=4, decoder_channels=16, decoder_rates=(4, 2))
    params = vae.init(jax.random.key(0), jnp.zeros((1, 8, 2)), sample=False)
    latents = jax.random.normal(jax.random.key(1), (1, 150, 4))
    full = jax.jit(lambda p, z: vae.apply(p, z, method=DACVAE.decode))(params, latents)
    overlap = decoder_receptive_field(vae)
    chunked = jax.jit(lambda p, z: chunked_decode(vae, p, z, chunk_size=32, overlap=overlap))(params, latents)
    assert chunked.shape == full.shape == (1, 150 * 8, 2)
    np.testing.assert_allclose(chunked, full, atol=2e-6, rtol=0)


def test_train_vae_trains_and_exports_the_dac_vae(tmp_path):
    """`train-vae --config configs/vae.py:dac-tiny` on a folder of audio: finite losses, weights that move from
    step to step, and an export that is the last checkpoint's weights: a stored VAE of type dac_vae that loads and
    round-trips audio."""
    import soundfile as sf

    from stableaudio_jax.cli import main
    from stableaudio_jax.store import load_vae
    from stableaudio_jax.training.metrics import read_metrics
    (tmp_path / "audio").mkdir()
    t = np.arange(44100) / 44100
    for i in range(4):
        tone = 0.4 * np.sin(2 * np.pi * 110 * (i + 1) * t)
        sf.write(tmp_path / "audio" / f"{i}.wav", np.stack([tone, tone], 1).astype(np.float32), 44100)
    assert main(["train-vae", "--config", "configs/vae.py:dac-tiny", "--data", str(tmp_path / "audio"),
                 "--workdir", str(tmp_path / "run"), "--config.training.steps=4", "--config.training.log_every=2",
                 "--config.training.checkpoint_every=2",
                 "--config.training.spectral.fft_sizes=(256,)", "--config.training.spectral.hop_sizes=(64,)",
                 "--config.training.discriminator.n_ffts=(128,)", "--config.training.discriminator.hops=(32,)",
                 "--no-progress"]) == 0
    losses = [m["train/loss"] for m in read_metrics(tmp_path / "run") if "train/loss" in m]
    assert len(losses) == 2 and np.isfinite(losses).all()
    vae = load_vae(tmp_path / "run" / "model")
    assert vae.config.type == "dac_vae" and isinstance(vae.module, DACVAE)
    from stableaudio_jax.store import read_info
    from stableaudio_jax.training.vae_train import export_vae
    final = read_info(tmp_path / "run" / "model").weights_sha256
    assert read_info(export_vae(str(tmp_path / "run"), str(tmp_path / "at4"), step=4)).weights_sha256 == final
    assert read_info(export_vae(str(tmp_path / "run"), str(tmp_path / "at2"), step=2)).weights_sha256 != final
    audio = jnp.asarray(np.random.default_rng(0).uniform(-0.5, 0.5, (1, 64, 2)), jnp.float32)
    recon = vae.module.apply(vae.params, vae.module.apply(vae.params, audio, method=DACVAE.encode),
                             method=DACVAE.decode)
    assert recon.shape == (1, 64, 2) and np.isfinite(np.asarray(recon)).all()
