"""The whole product as a user runs it, on 8 CPU devices: audio + captions → ingest → train a tiny VAE → encode to
TFRecord latents → train a tiny DiT → generate from a training caption."""
import json

import numpy as np
import pytest
import soundfile as sf

from stableaudio_jax.cli import main
from stableaudio_jax.data.latent_records import read_manifest
from stableaudio_jax.data.tokenizer import train_sentencepiece
from stableaudio_jax.training.metrics import read_metrics

RATE = 44100
SOUNDS = {
    "a low bass drone": lambda t, r: 0.5 * np.sin(2 * np.pi * 55 * t) + 0.2 * np.sin(2 * np.pi * 110 * t),
    "a bright bell melody": lambda t, r: 0.4 * np.sin(2 * np.pi * (880 + 440 * (t > 0.6)) * t) * np.exp(-3 * (t % 0.3)),
    "soft noise bursts": lambda t, r: 0.3 * r.standard_normal(t.shape) * ((t % 0.4) < 0.2),
    "fast clicks": lambda t, r: 0.8 * ((np.arange(t.size) % 2205) < 20),
}
# Same VAE settings as tests/test_vae_training.py's mechanics tests: the compiled steps are shared in one process.
VAE_CONFIG = ["--config.mesh.data=2", "--config.mesh.fsdp=4", "--config.training.spectral.fft_sizes=(256,)",
              "--config.training.spectral.hop_sizes=(64,)", "--config.training.discriminator.n_ffts=(128,)",
              "--config.training.discriminator.hops=(32,)"]


def _audio_with_captions(root):
    rng = np.random.default_rng(0)
    root.mkdir()
    t = np.arange(int(RATE * 1.2)) / RATE
    for i, (caption, make) in enumerate(SOUNDS.items()):
        for take in range(2):
            audio = np.clip(make(t, rng) * (0.8 + 0.2 * take), -1, 1).astype(np.float32)
            sf.write(root / f"{i}_{take}.wav", np.stack([audio, audio], 1), RATE)
            (root / f"{i}_{take}.txt").write_text(caption)
    return root


def _tiny_t5(root):
    from transformers import T5Config, T5EncoderModel
    T5EncoderModel(T5Config(vocab_size=160, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                            feed_forward_proj="relu")).eval().save_pretrained(root)
    train_sentencepiece(list(SOUNDS) * 20, root / "spiece.model", vocab_size=60)
    return root


def _cli(*args):
    assert main([str(a) for a in args]) == 0


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("round_trip")
    audio, ingested, latents = _audio_with_captions(root / "audio"), root / "ingested", root / "latents"
    _cli("ingest", "--audio", audio, "--output", ingested, "--no-progress")
    _cli("train-vae", "--config", "configs/vae.py:tiny", "--data", audio, "--workdir", root / "vae",
         "--config.training.steps=10", "--no-progress", *VAE_CONFIG)
    t5 = _tiny_t5(root / "t5")
    _cli("encode", "--audio", ingested, "--output", latents, "--vae", root / "vae", "--text-encoder", t5,
         "--max-length", 24, "--window-frames", 128, "--batch-size", 16, "--no-progress")
    _cli("train", "--config", "configs/dit.py:tiny", "--data", latents, "--workdir", root / "dit",
         "--config.training.steps=300", "--config.training.demo.every=300", "--config.training.demo.steps=10",
         "--no-progress")
    return root


def test_encode_writes_sharded_records_with_a_manifest(pipeline_run):
    manifest = read_manifest(pipeline_run / "latents")
    windows = 8 * -(-int(RATE * 1.2) // (128 * 8))  # 8 files, ceil(52920 / 1024) windows each
    assert manifest["records"] == windows
    assert len(manifest["shards"]) == 4 and manifest["latent_channels"] == 4 and manifest["text_dim"] == 32
    assert max(s["records"] for s in manifest["shards"]) - min(s["records"] for s in manifest["shards"]) <= 53
    assert manifest["sources"]["vae"] == str(pipeline_run / "vae")


def test_diffusion_loss_falls_and_generation_is_audible(pipeline_run, tmp_path):
    logged = [m["train/loss"] for m in read_metrics(pipeline_run / "dit") if "train/loss" in m]
    assert len(logged) == 30
    first, last = np.mean(logged[:3]), np.mean(logged[-5:])
    assert last < 0.7 * first, (first, last)  # a stated margin: at least 30% lower after 300 steps
    demos = sorted((pipeline_run / "dit" / "demos" / "step_300").iterdir())
    assert [p.suffix for p in demos] == [".png", ".wav"]
    out = tmp_path / "gen.wav"
    _cli("generate", "a low bass drone", "--checkpoint", pipeline_run / "dit" / "model", "--out", out,
         "--steps", 20, "--no-progress")
    audio, rate = sf.read(out)
    assert rate == RATE and audio.shape == (64 * 8, 2)
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio ** 2)) > 1e-3
    config = json.loads((pipeline_run / "dit" / "config.json").read_text())
    assert config["training"]["data"]["encoder_config_hash"] == read_manifest(pipeline_run / "latents")[
        "encoder_config_hash"]


def test_interrupted_encode_resumes_without_duplicates(pipeline_run, tmp_path, capsys):
    import shutil

    from stableaudio_jax.data.tfrecord import iter_records
    done, redo = pipeline_run / "latents", tmp_path / "latents"
    shutil.copytree(done, redo)
    first = sorted(p.name for p in redo.glob("*.tfrecord"))[0]
    (redo / "manifest.json").unlink()  # as after a crash: one shard half written, no manifest yet
    (redo / f"{first}.done.json").unlink()
    (redo / first).rename(redo / f"{first}.partial")
    with open(redo / f"{first}.partial", "r+b") as f:
        f.truncate(1000)
    _cli("encode", "--audio", pipeline_run / "ingested", "--output", redo, "--vae", pipeline_run / "vae",
         "--text-encoder", pipeline_run / "t5", "--max-length", 24, "--window-frames", 128, "--batch-size", 16,
         "--no-progress")
    assert read_manifest(redo) == read_manifest(done) | {"sources": read_manifest(redo)["sources"]}
    for shard in read_manifest(done)["shards"]:
        assert [r for _, _, r in iter_records(redo / shard["file"])] == [
            r for _, _, r in iter_records(done / shard["file"])]
    code = main(["encode", "--audio", str(pipeline_run / "ingested"), "--output", str(redo), "--vae",
                 str(pipeline_run / "vae"), "--text-encoder", str(pipeline_run / "t5"), "--max-length", "24",
                 "--window-frames", "64", "--batch-size", "16", "--no-progress"])
    assert code == 2 and "holds a partial encode with other settings" in capsys.readouterr().err
