"""Cloud storage paths (gs://) through every command, against a local GCS emulator (tests/conftest.py's
``gcs_bucket``): the path layer on its own, clear errors for a missing bucket or credentials, and the whole
workflow (ingest → train-vae → encode → train with checkpoints → resume → generate) with every input and
output in the bucket and nothing written locally except caches."""
import io
import json
import os
import tempfile
import uuid

import numpy as np
import pytest
import soundfile as sf

from stableaudio_jax import paths
from stableaudio_jax.cli import main

pytestmark = pytest.mark.slow


RATE = 44100


@pytest.fixture
def prefix(gcs_bucket):
    """A fresh folder in the emulated bucket for each test."""
    return f"{gcs_bucket}/{uuid.uuid4().hex[:8]}"


def test_files_and_folders_round_trip_through_the_bucket(prefix, tmp_path):
    paths.write_text_atomic(f"{prefix}/a/b.txt", "hello")
    paths.write_json_atomic(f"{prefix}/a/c.json", {"x": 1})
    assert paths.read_text(f"{prefix}/a/b.txt") == "hello" and paths.read_json(f"{prefix}/a/c.json") == {"x": 1}
    assert paths.isfile(f"{prefix}/a/b.txt") and paths.isdir(f"{prefix}/a") and not paths.exists(f"{prefix}/z")
    assert paths.listdir(f"{prefix}/a") == ["b.txt", "c.json"]
    paths.append_text(f"{prefix}/a/log", "1\n")
    paths.append_text(f"{prefix}/a/log", "2\n")
    assert paths.read_text(f"{prefix}/a/log") == "1\n2\n"
    paths.replace(f"{prefix}/a/log", f"{prefix}/a/log2")
    assert not paths.exists(f"{prefix}/a/log") and paths.read_text(f"{prefix}/a/log2") == "1\n2\n"
    # a staged folder appears whole, marker last; a failed one leaves the old content untouched
    with paths.staged_directory(f"{prefix}/model", marker="done") as staging:
        for name in ("done", "w1", "w2"):
            (tmp_path / "unused").write_text("")  # staging is a local folder
            with open(os.path.join(staging, name), "w") as f:
                f.write(name)
    assert paths.listdir(f"{prefix}/model") == ["done", "w1", "w2"]
    with pytest.raises(RuntimeError, match="boom"):
        with paths.staged_directory(f"{prefix}/model", marker="done") as staging:
            raise RuntimeError("boom")
    assert paths.read_text(f"{prefix}/model/w1") == "w1" and not os.path.exists(staging)


def test_a_mirror_follows_the_bucket(prefix, tmp_path, monkeypatch):
    monkeypatch.setenv("STABLEAUDIO_JAX_CACHE", str(tmp_path / "cache"))
    paths.write_text_atomic(f"{prefix}/d/x", "one")
    local = paths.mirror(f"{prefix}/d")
    assert open(os.path.join(local, "x")).read() == "one"
    paths.write_text_atomic(f"{prefix}/d/x", "two")  # same size, new object: fetched again
    assert open(os.path.join(paths.mirror(f"{prefix}/d"), "x")).read() == "two"
    assert local.startswith(str(tmp_path / "cache"))


def test_a_missing_bucket_is_named_before_the_command_starts(gcs_bucket, capsys):
    assert main(["train", "--data", "synthetic", "--workdir", "gs://no-such-bucket/run"]) == 2
    err = capsys.readouterr().err
    assert "--workdir gs://no-such-bucket/run: bucket 'no-such-bucket' does not exist" in err, err


def test_missing_credentials_are_named_with_the_path(gcs_bucket, monkeypatch, tmp_path, capsys):
    import fsspec
    import gcsfs
    monkeypatch.setitem(fsspec.config.conf["gcs"], "token", str(tmp_path / "no-such-credentials.json"))
    gcsfs.GCSFileSystem.clear_instance_cache()
    try:
        assert main(["generate", "x", "--checkpoint", f"{gcs_bucket}/model"]) == 2
    finally:
        gcsfs.GCSFileSystem.clear_instance_cache()
    err = capsys.readouterr().err
    assert f"{gcs_bucket}/model" in err and "credentials" in err, err


def _audio_folder(prefix: str) -> None:
    """Eight short stereo clips with caption sidecars, uploaded to ``prefix``."""
    rng = np.random.default_rng(0)
    t = np.arange(int(RATE * 1.2)) / RATE
    captions = ["a low drone", "a bright bell", "soft noise", "fast clicks"]
    for i, caption in enumerate(captions):
        for take in range(2):
            tone = np.sin(2 * np.pi * 110 * (i + 1) * t) * (0.3 + 0.2 * take) + 0.05 * rng.standard_normal(t.size)
            buffer = io.BytesIO()
            sf.write(buffer, np.stack([tone, tone], 1).astype(np.float32), RATE, format="WAV")
            paths.write_bytes_atomic(f"{prefix}/{i}_{take}.wav", buffer.getvalue())
            paths.write_text_atomic(f"{prefix}/{i}_{take}.txt", caption)


def _t5_folder(prefix: str, staging) -> None:
    from transformers import T5Config, T5EncoderModel

    from stableaudio_jax.store.tokenizers import train_sentencepiece
    T5EncoderModel(T5Config(vocab_size=160, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                            feed_forward_proj="relu")).eval().save_pretrained(staging)
    train_sentencepiece(["a low drone", "a bright bell", "soft noise", "fast clicks"] * 20,
                        f"{prefix}/spiece.model", vocab_size=60)
    paths.upload_tree(str(staging), prefix)


def _cli(*args) -> None:
    assert main([str(a) for a in args]) == 0, args


def test_the_whole_workflow_lives_in_the_bucket(prefix, tmp_path, monkeypatch):
    """ingest → train-vae → encode → train (checkpoints) → resume → generate: every path a gs:// URL. The run
    happens in an empty working directory with its own temporary folder: afterwards both are still empty, and
    the local cache holds only mirrors of bucket data."""
    from stableaudio_jax.training.metrics import read_metrics
    workdir, tmp, cache = tmp_path / "cwd", tmp_path / "tmp", tmp_path / "cache"
    for folder in (workdir, tmp):
        folder.mkdir()
    _t5_folder(f"{prefix}/t5", tmp_path / "t5-staging")
    _audio_folder(f"{prefix}/audio")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("STABLEAUDIO_JAX_CACHE", str(cache))

    _cli("ingest", "--audio", f"{prefix}/audio", "--out", f"{prefix}/ingested", "--no-progress")
    _cli("train-vae", "--config", "configs/vae.py:tiny", "--data", f"{prefix}/ingested", "--workdir",
         f"{prefix}/vae", "--config.training.steps=2", "--config.mesh.data=2", "--config.mesh.fsdp=4",
         "--config.training.spectral.fft_sizes=(256,)", "--config.training.spectral.hop_sizes=(64,)",
         "--config.training.discriminator.n_ffts=(128,)", "--config.training.discriminator.hops=(32,)",
         "--no-progress")
    _cli("encode", "--audio", f"{prefix}/ingested", "--out", f"{prefix}/latents", "--vae", f"{prefix}/vae",
         "--text-encoder", f"{prefix}/t5", "--max-length", 24, "--window-frames", 128, "--batch-size", 16,
         "--no-progress")
    train = ["train", "--config", "configs/dit.py:tiny", "--data", f"{prefix}/latents", "--workdir",
             f"{prefix}/dit", "--config.training.checkpoint_every=2", "--config.training.log_every=1",
             "--config.training.demo.every=4", "--config.training.demo.steps=2", "--no-progress"]
    _cli(*train, "--config.training.steps=2")
    assert paths.listdir(f"{prefix}/dit/checkpoints") == ["2"]
    _cli(*train, "--config.training.steps=4")  # the same command, further: resumes from the bucket
    # continued from step 2 (a fresh start would log 1, 2 again), and the log kept the first run's lines
    assert [m["step"] for m in read_metrics(f"{prefix}/dit") if "train/loss" in m] == [1, 2, 3, 4]
    assert paths.listdir(f"{prefix}/dit/checkpoints") == ["2", "4"]
    _cli("generate", "a low drone", "--checkpoint", f"{prefix}/dit/model", "--out", f"{prefix}/out/gen.wav",
         "--steps", 4, "--spectrogram", "--no-progress")

    audio, rate = sf.read(io.BytesIO(paths.read_bytes(f"{prefix}/out/gen.wav")))
    assert rate == RATE and audio.shape == (64 * 8, 2) and np.isfinite(audio).all()
    written = {p[len(prefix) + 1:] for p in paths.walk_files(prefix)}
    for expected in ("ingested/ingest_report.json", "vae/model/stableaudio_jax.json", "vae/config.json",
                     "vae/metrics.jsonl", "latents/manifest.json", "dit/config.json", "dit/data.json",
                     "dit/model/stableaudio_jax.json", "dit/model/diffusion/weights.safetensors",
                     "dit/demos/step_4/0.wav", "dit/demos/step_4/0.png", "out/gen.png"):
        assert expected in written, (expected, sorted(written))
    assert any(p.startswith("dit/checkpoints/4/") for p in written)
    assert any(p.startswith("dit/tensorboard/") for p in written)
    assert json.loads(paths.read_text(f"{prefix}/latents/manifest.json"))["sources"]["vae"] == f"{prefix}/vae/model"
    assert os.listdir(workdir) == [] and os.listdir(tmp) == []
    assert os.listdir(cache) == ["mirror"]  # copies of the bucket's audio, dataset and T5 for local-file readers


def test_audio_files_and_demo_data_in_the_bucket(prefix):
    """write/read audio by URL, and `demo-data --out gs://...` read back by the evaluation's loader."""
    from stableaudio_jax.audio.io import load_audio, write_audio
    from stableaudio_jax.evaluation.evaluate import load_split
    tone = np.stack([np.sin(np.linspace(0, 200, 4410))] * 2, 1).astype(np.float32) * 0.5
    write_audio(f"{prefix}/x/tone.flac", tone, RATE)
    audio, rate = load_audio(f"{prefix}/x/tone.flac")
    assert rate == RATE and np.abs(audio - tone).max() < 1e-4
    _cli("demo-data", "--out", f"{prefix}/demo", "--clips", 3, "--seconds", 1.0, "--no-progress")
    assert paths.isfile(f"{prefix}/demo/demo_data_report.json") and paths.isfile(f"{prefix}/demo/captions.jsonl")
    clips = load_split(f"{prefix}/demo", "train")
    assert clips and all(c.audio.shape[0] > 0 and np.isfinite(c.audio).all() for c in clips)


def test_convert_reads_and_writes_the_bucket(prefix, tmp_path, monkeypatch):
    """A stable-audio-tools checkpoint, its config and T5 in the bucket → a stored model in the bucket, the same
    weights as converting the local files."""
    import shutil

    from helpers import build_tiny_sao_diffusers, sat_model_config, write_sat_checkpoint

    from stableaudio_jax.store import read_info
    monkeypatch.setenv("STABLEAUDIO_JAX_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "ref"
    parts = build_tiny_sao_diffusers(root / "diffusers", 128, 32, ["a dog barking"])
    write_sat_checkpoint(parts, root / "model.safetensors")
    (root / "model_config.json").write_text(json.dumps(sat_model_config(128)))
    shutil.copytree(root / "diffusers" / "text_encoder", root / "t5")
    shutil.copy(root / "diffusers" / "tokenizer" / "spiece.model", root / "t5" / "spiece.model")
    for name in ("model.safetensors", "model_config.json", "t5"):
        if (root / name).is_dir():
            paths.upload_tree(str(root / name), f"{prefix}/ref/{name}")
        else:
            paths.copy_file(str(root / name), f"{prefix}/ref/{name}")
    _cli("convert", "--from", "stable-audio-tools", "--checkpoint", f"{prefix}/ref/model.safetensors",
         "--model-config", f"{prefix}/ref/model_config.json", "--t5", f"{prefix}/ref/t5", "--out", f"{prefix}/ck")
    _cli("convert", "--from", "stable-audio-tools", "--checkpoint", root / "model.safetensors",
         "--model-config", root / "model_config.json", "--t5", root / "t5", "--out", tmp_path / "ck")
    remote, local = read_info(f"{prefix}/ck"), read_info(tmp_path / "ck")
    assert remote.kind == "text-to-audio" and remote.component_sha256 == local.component_sha256
