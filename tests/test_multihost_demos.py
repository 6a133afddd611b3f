"""A pod run's demos: 2 JAX processes x 4 CPU devices train a DiT with its parameters sharded (fsdp) across both
processes, through two demos, a checkpoint and the export; the demo audio equals what one process renders from the
same checkpoint. (Before: process 0 read the sharded weights alone and crashed at the first demo on > 1 host.)"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf

from stableaudio_jax.cli import main
from stableaudio_jax.config_loader import load_config
from stableaudio_jax.store import VAE, save_vae
from stableaudio_jax.store.builders import vae_from_config
from stableaudio_jax.store.tokenizers import train_sentencepiece

pytestmark = pytest.mark.multihost
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 44100
CAPTIONS = ["a low drone", "a bright bell", "soft noise", "fast clicks"]


def _cli(*args):
    assert main([str(a) for a in args]) == 0, args


def _encoded_latents(root):
    """Audio + captions → ingest → latents encoded by a (random) stored tiny VAE and a tiny T5: the VAE and text
    encoder the demos load come from the latents' manifest, as in a real run."""
    from transformers import T5Config, T5EncoderModel
    audio = root / "audio"
    audio.mkdir()
    t = np.arange(int(RATE * 1.2)) / RATE
    for i, caption in enumerate(CAPTIONS):
        wave = (0.3 * np.sin(2 * np.pi * 110 * (i + 1) * t)).astype(np.float32)
        sf.write(audio / f"{i}.wav", np.stack([wave, wave], 1), RATE)
        (audio / f"{i}.txt").write_text(caption)
    config = load_config("configs/vae.py:tiny", [])
    module = vae_from_config(config.model)
    params = module.init(jax.random.key(0), np.zeros((1, 2048, 2), np.float32), sample=False)
    save_vae(root / "vae", VAE(module, jax.device_get(params), config.model))
    T5EncoderModel(T5Config(vocab_size=160, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                            feed_forward_proj="relu")).eval().save_pretrained(root / "t5")
    train_sentencepiece(CAPTIONS * 20, root / "t5" / "spiece.model", vocab_size=40)
    _cli("ingest", "--audio", audio, "--out", root / "ingested", "--no-progress")
    _cli("encode", "--audio", root / "ingested", "--out", root / "latents", "--vae", root / "vae",
         "--text-encoder", root / "t5", "--max-length", 16, "--window-frames", 64, "--batch-size", 8,
         "--no-progress")
    return root / "latents"


def test_a_two_process_fsdp_run_renders_its_demos_and_exports(tmp_path):
    latents = _encoded_latents(tmp_path)
    run = tmp_path / "run"
    command = ["stableaudio-jax", "train", "--config", "configs/dit.py:tiny", "--data", str(latents), "--workdir",
               str(run), "--config.mesh.data=1", "--config.mesh.fsdp=8", "--config.training.steps=4",
               "--config.training.log_every=2", "--config.training.checkpoint_every=4",
               "--config.training.demo.every=2", "--config.training.demo.steps=2", "--no-progress"]
    launcher = [sys.executable, os.path.join(ROOT, "launch", "local.py"), "--cpu-devices", "4", "2", *command]
    result = subprocess.run(launcher, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert result.stdout.count("done: {") == 2  # both processes ran to the last step and said so
    config = json.loads((run / "config.json").read_text())
    assert config["mesh"]["fsdp"] == 8  # the weights were sharded over both processes' devices
    for step in (2, 4):
        assert sorted(os.listdir(run / "demos" / f"step_{step}")) == ["0.png", "0.wav"]
    assert os.listdir(run / "checkpoints") == ["4"]
    assert (run / "model" / "stableaudio_jax.json").is_file()

    # one process (this one: 8 local devices) renders the demos of the same checkpoint
    from stableaudio_jax.training.diffusion_train import render_demos
    written = render_demos(str(run), step=4, out=str(tmp_path / "single"))
    assert written == [str(tmp_path / "single" / "demos" / "step_4" / "0.wav")]
    pod, _ = sf.read(run / "demos" / "step_4" / "0.wav")
    single, _ = sf.read(written[0])
    assert pod.shape == single.shape == (64 * 8, 2)  # crop_frames x the tiny VAE's 8x downsampling
    assert np.abs(pod).max() > 1e-3  # real audio, not silence
    np.testing.assert_allclose(pod, single, atol=2 / 32768)  # the same clip, up to 16-bit rounding
    two, _ = sf.read(run / "demos" / "step_2" / "0.wav")
    assert np.abs(two - pod).max() > 1e-4  # the weights moved between the two demos
