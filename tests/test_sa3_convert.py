"""Stable Audio 3 checkpoints through the command line: tiny checkpoints in the published layout, built by the
reference's own factory with random weights (tests/data/sa3_tiny, benchmarks/make_sa3_checkpoints.py: Small's
layout with a SAME-S-shaped autoencoder, Medium's with differential attention and a SAME-L-shaped one, and a
standalone SAME repository), converted with a tiny T5Gemma and asked for audio of the requested duration."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import gemma_style_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

DATA = Path(__file__).parent / "data" / "sa3_tiny"
T5GEMMA = dict(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
               num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=4,
               rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def _cli(capsys, *args) -> tuple[int, str, str]:
    from stableaudio_jax import cli
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory):
    """A random 16-wide T5GemmaEncoderModel saved by transformers, with a Gemma-style tokenizer."""
    directory = tmp_path_factory.mktemp("t5gemma")
    config = transformers.T5GemmaConfig(encoder=T5GEMMA, decoder=T5GEMMA, is_encoder_decoder=False)
    torch.manual_seed(0)
    transformers.T5GemmaEncoderModel(config).save_pretrained(directory)
    gemma_style_tokenizer(directory, {"padding_side": "right"})
    return directory


@pytest.mark.parametrize("layout,sampler", [("small", "pingpong"), ("medium", "euler")])
def test_an_sa3_checkpoint_converts_and_generates_the_requested_duration(capsys, tmp_path, text_encoder, layout,
                                                                       sampler):
    out = tmp_path / "model"
    code, printed, err = _cli(capsys, "convert", "--from", "stable-audio-3", "--checkpoint", DATA / layout,
                              "--text-encoder", text_encoder, "--out", out)
    assert code == 0, err
    from stableaudio_jax.store.sa3 import load_sa3
    model = load_sa3(out)
    assert model.config.generation.sampler == sampler  # post-trained: ping-pong; "-base": Euler
    assert model.denoiser.dit.differential == (layout == "medium")
    assert (model.vae.module.sliding_window is not None) == (layout == "medium")
    code, printed, err = _cli(capsys, "generate", "a slow piano piece", "happy flute", "--checkpoint", out,
                              "--seconds", 0.6, "--out", tmp_path / "clip.wav", "--no-progress")
    assert code == 0, err
    for i in range(2):
        audio, rate = sf.read(tmp_path / f"clip_{i}.wav")
        assert (audio.shape, rate) == ((1200, 2), 2000)
    assert "wrote" in printed and "0.60 s, 2 channels" in printed
    if layout == "small":  # an SA3 DoRA file (tests/test_sa3_lora.py checks its weights) changes the audio
        code, _, err = _cli(capsys, "generate", "a slow piano piece", "--checkpoint", out, "--seconds", 0.6,
                            "--lora", DATA / "loras" / "dora-rows.safetensors:0.7", "--out", tmp_path / "dora.wav",
                            "--no-progress")
        assert code == 0, err
        assert np.abs(sf.read(tmp_path / "dora.wav")[0] - sf.read(tmp_path / "clip_0.wav")[0]).max() > 1e-4


def test_a_same_repository_converts_to_a_stored_vae(capsys, tmp_path):
    code, _, err = _cli(capsys, "convert", "--from", "same", "--checkpoint", DATA / "same", "--out", tmp_path / "ae")
    assert code == 0, err
    import jax.numpy as jnp
    from stableaudio_jax.store import load_vae
    vae = load_vae(tmp_path / "ae")
    assert (vae.module.sliding_window, vae.module.decoder_sinusoidal_blocks, vae.module.sample_rate) == (1, 2, 2000)
    latents = vae.module.apply(vae.params, jnp.zeros((1, 320, 2)), method="encode")
    assert latents.shape == (1, 10, 8)


def test_bad_sa3_inputs_are_one_clear_error(capsys, tmp_path, text_encoder):
    code, _, err = _cli(capsys, "convert", "--from", "stable-audio-3", "--checkpoint", DATA / "small", "--out",
                        tmp_path / "x")
    assert code == 2 and "needs --text-encoder" in err
    patched = tmp_path / "patched"
    shutil.copytree(DATA / "small", patched)
    config = json.loads((patched / "model_config.json").read_text())
    config["model"]["diffusion"]["config"]["patch_size"] = 2
    (patched / "model_config.json").write_text(json.dumps(config))
    code, _, err = _cli(capsys, "convert", "--from", "stable-audio-3", "--checkpoint", patched, "--text-encoder",
                        text_encoder, "--out", tmp_path / "y")
    assert code == 2 and "{'patch_size': 2} are not implemented" in err
    code, _, err = _cli(capsys, "convert", "--from", "stable-audio-3", "--checkpoint", DATA / "small",
                        "--text-encoder", tmp_path, "--out", tmp_path / "z")
    assert code == 2 and "no config.json" in err
    untokenized = tmp_path / "t5gemma_without_tokenizer"
    shutil.copytree(text_encoder, untokenized, ignore=shutil.ignore_patterns("tokenizer*"))
    code, _, err = _cli(capsys, "convert", "--from", "stable-audio-3", "--checkpoint", DATA / "small",
                        "--text-encoder", untokenized, "--out", tmp_path / "w")
    assert code == 2 and "no tokenizer.json; expected a Hugging Face tokenizer directory" in err
    assert len(err.strip().splitlines()) == 1
    converted = tmp_path / "model"
    assert _cli(capsys, "convert", "--from", "stable-audio-3", "--checkpoint", DATA / "small", "--text-encoder",
                text_encoder, "--out", converted)[0] == 0
    code, _, err = _cli(capsys, "generate", "piano", "--checkpoint", converted, "--seconds", 5, "--out",
                        tmp_path / "a.wav", "--no-progress")
    assert code == 2 and "duration [5.0] s: expected seconds in (0, 1.02]" in err
    code, _, err = _cli(capsys, "generate", "piano", "--checkpoint", converted, "--cfg-rescale", 0.5, "--out",
                        tmp_path / "a.wav", "--no-progress")
    assert code == 2 and "--cfg-rescale is not an option of Stable Audio 3 models" in err
    np.testing.assert_equal(sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".wav"), [])
