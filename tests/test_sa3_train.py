"""`train` on Stable Audio 3 (configs/sa3.py:tiny): clips of different lengths encoded by a SAME autoencoder and
T5Gemma, trained on a data x fsdp mesh with padding masks, exported as an SA3 bundle that `generate` runs at the
requested duration; a DoRA run on that bundle as its base, applied by `generate --lora`, and ARC post-training of it
into a few-step model; data another text encoder made is refused by name. (The discriminator's masking of padded
frames: tests/test_sa3_training.py.)"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from helpers import TEXT_DIM, gemma_style_tokenizer, write_latents

RATE = 2000  # configs/same.py:tiny's toy rate


def _cli(capsys, *args):
    from stableaudio_jax import cli
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """A stored SAME tiny and a stored 16-wide T5Gemma with a Gemma-style tokenizer, random weights."""
    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.models.same import same_from_config
    from stableaudio_jax.models.t5gemma import T5GemmaEncoder
    from stableaudio_jax.store.hf_tokenizer import HFTokenizer
    from stableaudio_jax.store.models import VAE, save_text_encoder, save_vae
    from stableaudio_jax.store.t5gemma_text import T5GemmaText
    root = tmp_path_factory.mktemp("sa3_encoders")
    same = load_config("configs/same.py:tiny").model
    module = same_from_config(same)
    save_vae(root / "same", VAE(module, module.init(jax.random.key(0), jnp.zeros((1, 256, 2))), same))
    gemma_style_tokenizer(root / "tokenizer", {"padding_side": "right"})
    text = T5GemmaEncoder(vocab_size=300, d_model=16, mlp_hidden=32, num_layers=1, num_heads=2, num_kv_heads=2,
                          head_dim=8, query_pre_attn_scalar=8.0, sliding_window=4)
    params = text.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), bool))
    save_text_encoder(root / "t5gemma", T5GemmaText(text, params, HFTokenizer.from_directory(root / "tokenizer", 12),
                                                   12))
    return root


def _at(tree, keys):
    for key in keys:
        tree = tree[key]
    return tree


def _clips(folder, seconds):
    """Stereo tones of the given lengths, each with a caption sidecar."""
    folder.mkdir()
    for i, length in enumerate(seconds):
        t = np.arange(int(length * RATE)) / RATE
        tone = 0.4 * np.sin(2 * np.pi * (110 + 40 * i) * t) * np.exp(-2 * t)
        sf.write(folder / f"clip_{i}.wav", np.stack([tone, np.roll(tone, 5)], 1).astype(np.float32), RATE)
        (folder / f"clip_{i}.txt").write_text(("a slow piano piece", "happy flute at 120 BPM")[i % 2])


def test_an_sa3_model_trains_on_clips_of_different_lengths_and_generates(tmp_path, capsys, encoders):
    lengths = [0.3, 0.45, 0.6, 0.75, 0.9, 1.0, 0.35, 0.8]
    _clips(tmp_path / "music", lengths)
    code, out = _cli(capsys, "ingest", "--audio", tmp_path / "music", "--out", tmp_path / "audio", "--sample-rate",
                     RATE, "--channels", 2, "--no-progress")
    assert code == 0, out
    code, out = _cli(capsys, "encode", "--audio", tmp_path / "audio", "--out", tmp_path / "latents", "--vae",
                     encoders / "same", "--text-encoder", encoders / "t5gemma", "--max-length", 12, "--window-frames",
                     64, "--batch-size", 8, "--no-progress")
    assert code == 0, out
    from stableaudio_jax.data import latent_reader
    records = next(iter(latent_reader.latent_dataset(str(tmp_path / "latents"), 8, 64, seed=0)))
    valid = sorted(records["padding_mask"].sum(1).tolist())  # one record per clip, its frames valid, the rest padded
    assert valid == sorted(int(np.ceil(s * RATE / 32)) for s in lengths)
    workdir = tmp_path / "run"
    code, out = _cli(capsys, "train", "--config", "configs/sa3.py:tiny", "--data", tmp_path / "latents", "--workdir",
                     workdir, "--no-progress", "--force", "--config.mesh.data=4", "--config.mesh.fsdp=2",
                     "--config.training.steps=12", "--config.training.log_every=4",
                     "--config.training.checkpoint_every=12")
    assert code == 0, out
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in metrics if "train/loss" in m]
    assert [m["step"] for m in logged] == [4, 8, 12] and all(np.isfinite(m["train/loss"]) for m in logged)
    assert all(0 < m["train/sa3/generated_fraction"] <= 1 for m in logged)
    from stableaudio_jax.store.sa3 import load_sa3
    model = load_sa3(workdir / "model")
    assert (model.objective, model.config.generation.sampler, model.config.generation.sample_rate) == (
        "rectified_flow", "euler", RATE)
    code, out = _cli(capsys, "generate", "a slow piano piece", "--checkpoint", workdir / "model", "--seconds", 0.7,
                     "--steps", 4, "--out", tmp_path / "clip.wav", "--no-progress")
    assert code == 0, out
    audio, rate = sf.read(tmp_path / "clip.wav")
    assert (audio.shape, rate) == ((1400, 2), RATE) and np.isfinite(audio).all()
    # DoRA on that model as a base with the SA3 configs' LoRA defaults (the reference's train_lora.py: dora-rows on
    # every layer of the DiT), applied by `generate --lora`
    code, out = _cli(capsys, "train", "--config", "configs/sa3.py:tiny", "--init-from", workdir / "model", "--data",
                     tmp_path / "latents", "--workdir", tmp_path / "lora", "--no-progress", "--force",
                     "--config.training.lora.rank=2", "--config.training.lora.alpha=8", "--config.training.steps=6",
                     "--config.training.log_every=3", "--config.training.optimizer.lr=0.02")
    assert code == 0, out
    from stableaudio_jax.store.adapters import load_lora
    adapter = load_lora(tmp_path / "lora" / "model")
    from stableaudio_jax.models import lora
    base_dit = {"params": load_sa3(workdir / "model").params["params"]["dit"]}
    assert lora.adapter_paths(adapter.adapters) == sorted(lora.linear_layers(base_dit))  # every layer
    assert adapter.spec.kind == "dora-rows" and lora.is_dora(adapter.adapters)  # a, b and the magnitude m
    code, out = _cli(capsys, "generate", "a slow piano piece", "--checkpoint", workdir / "model", "--lora",
                     tmp_path / "lora" / "model", "--seconds", 0.7, "--steps", 4, "--out", tmp_path / "lora.wav",
                     "--no-progress")
    assert code == 0, out
    assert sf.read(tmp_path / "lora.wav")[0].shape == audio.shape
    # the adapter learned (B starts at zero) and is what generate merges into the DiT (the random SAME decoder
    # barely moves with its latents, so the audio is no test of it)
    from stableaudio_jax.commands.generate_sa3 import merged_loras
    base = load_sa3(workdir / "model")
    merged = merged_loras(base, [str(tmp_path / "lora" / "model")])["params"]["dit"]
    before = base.params["params"]["dit"]
    qkv = ("blocks_0", "self_attn", "to_qkv", "kernel")
    assert np.abs(np.asarray(_at(merged, qkv)) - np.asarray(_at(before, qkv))).max() > 1e-4
    assert np.abs(merged["project_in"]["kernel"] - before["project_in"]["kernel"]).max() > 1e-4  # adapted too
    kept = [(p, m, b) for (p, m), b in zip(jax.tree_util.tree_flatten_with_path(merged)[0],
                                            jax.tree_util.tree_leaves(before)) if p[-1].key != "kernel"]
    assert kept and all(np.array_equal(m, b) for _, m, b in kept)  # biases and norms stay the base's
    # ARC post-training of that rectified-flow model into a few-step one (ping-pong, 8 steps)
    code, out = _cli(capsys, "train-arc", "--config", "configs/sa3.py:tiny", "--init-from", workdir / "model",
                     "--data", tmp_path / "latents", "--workdir", tmp_path / "arc", "--no-progress", "--force",
                     "--config.training.steps=4", "--config.training.log_every=2")
    assert code == 0, out
    metrics = [json.loads(line) for line in (tmp_path / "arc" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(m["train/discriminator_loss"]) for m in metrics if "train/discriminator_loss" in m)
    few_step = load_sa3(tmp_path / "arc" / "model")
    assert (few_step.objective, few_step.config.generation.sampler, few_step.config.generation.steps) == (
        "rf_denoiser", "pingpong", 8)
    code, out = _cli(capsys, "generate", "happy flute at 120 BPM", "--checkpoint", tmp_path / "arc" / "model",
                     "--seconds", 0.5, "--out", tmp_path / "arc.wav", "--no-progress")
    assert code == 0, out
    assert sf.read(tmp_path / "arc.wav")[0].shape == (1000, 2)


def test_sa3_training_refuses_data_another_text_encoder_made(tmp_path, capsys):
    data = write_latents(tmp_path / "t5_latents", channels=8, text_dim=TEXT_DIM)  # a T5's embeddings
    code, out = _cli(capsys, "train", "--config", "configs/sa3.py:tiny", "--data", data, "--workdir", tmp_path / "r",
                     "--no-progress")
    assert code != 0 and "an SA3 model reads T5Gemma states" in out, out
