"""The whole product as a user runs it, on 8 CPU devices: audio + captions → ingest → train a tiny VAE → encode to
TFRecord latents → train a tiny DiT (v) and a tiny U-Net (eps) → each exports a text-to-audio model → generate.
The shared part (up to the trained DiT) is the session's ``tiny_world`` (tests/conftest.py): the README's
``quickstart --preset ci`` run."""
import json

import numpy as np
import pytest
import soundfile as sf

from stableaudio_jax.cli import main
from stableaudio_jax.data.latent_records import read_manifest
from stableaudio_jax.store import read_info
from stableaudio_jax.training.metrics import read_metrics
from helpers import (TINY_WORLD_LATENT_CHANNELS, TINY_WORLD_RATE, TINY_WORLD_UNET, tiny_world_captions,
                     tiny_world_vae_overrides)

pytestmark = pytest.mark.slow


def _cli(*args):
    assert main([str(a) for a in args]) == 0


# the quickstart's encode settings (configs/quickstart.py, ci): its stored T5 tokenizes to 48 tokens
ENCODE = ["--max-length", 48, "--window-frames", 96, "--batch-size", 8, "--no-progress"]


def _dit_on_world(world):
    """Overrides for a DiT trained from scratch here on the world's latents: their 16 channels, and the world's VAE
    as the model's ``config.vae`` (the latents must come from the VAE the model names; the export bundles it)."""
    vae = read_info(world / "vae" / "model").config.to_dict()
    literal = lambda v: f"({','.join(map(str, v))})" if isinstance(v, (list, tuple)) else str(v)  # noqa: E731
    return [f"--config.model.io_channels={TINY_WORLD_LATENT_CHANNELS}",
            *(f"--config.vae.{key}={literal(value)}" for key, value in vae.items())]


def _held_out_caption(world):
    return tiny_world_captions(world, "test")[0]


def test_encode_writes_sharded_records_with_a_manifest(tiny_world):
    from stableaudio_jax.data.demo_data import SCORE_LICENSE
    manifest = read_manifest(tiny_world / "latents")
    captions = tiny_world_captions(tiny_world)
    # each 1.5 s clip is 24000 samples, 94 latent frames (a 256x VAE): one 96-frame window per train clip
    assert manifest["records"] == len(captions) == 20 and manifest["latent_frames"] == 96
    assert len(manifest["shards"]) == 4 and manifest["latent_channels"] == 16 and manifest["text_dim"] == 32
    assert max(s["records"] for s in manifest["shards"]) - min(s["records"] for s in manifest["shards"]) <= 1
    # the finished train-vae run exported its VAE; the manifest records it and the hash of its weights
    assert manifest["sources"]["vae"] == str(tiny_world / "vae" / "model")
    assert manifest["encoder_config"]["vae_sha256"] == read_info(tiny_world / "vae" / "model").weights_sha256
    # where every encoded file came from, and under which licence
    assert manifest["data"]["licenses"] == {SCORE_LICENSE: 20}
    provenance = [json.loads(line) for line in
                  (tiny_world / "latents" / "provenance.jsonl").read_text().splitlines()]
    assert sorted(p["caption"] for p in provenance) == sorted(captions)
    assert all(p["source"].startswith("music21 corpus: ") and p["license"] == SCORE_LICENSE for p in provenance)


def test_diffusion_loss_falls_and_generation_is_audible(tiny_world, tmp_path):
    logged = [m["train/loss"] for m in read_metrics(tiny_world / "dit") if "train/loss" in m]
    assert len(logged) == 8  # every 5 of the 40 steps
    first, last = logged[0], np.mean(logged[-3:])
    assert last < 0.7 * first, (first, last)  # a stated margin: at least 30% lower after 40 steps
    out = tmp_path / "gen.wav"
    _cli("generate", _held_out_caption(tiny_world), "--checkpoint", tiny_world / "dit" / "model", "--out", out,
         "--steps", 20, "--no-progress")
    audio, rate = sf.read(out)
    assert rate == TINY_WORLD_RATE and audio.shape == (32 * 256,)  # the model's window (its 32-frame crop), mono
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio ** 2)) > 1e-3
    # any checkpoint of the run exports too (here an earlier one), with its provenance
    _cli("export", "--workdir", tiny_world / "dit", "--step", 20, "--out", tmp_path / "step20")
    info = read_info(tmp_path / "step20")
    assert info.kind == "text-to-audio" and info.provenance["step"] == 20
    assert info.component_sha256["diffusion"] != read_info(tiny_world / "dit" / "model").component_sha256[
        "diffusion"]
    config = json.loads((tiny_world / "dit" / "config.json").read_text())
    assert config["training"]["data"]["encoder_config_hash"] == read_manifest(tiny_world / "latents")[
        "encoder_config_hash"]


def test_interrupted_encode_resumes_without_duplicates(tiny_world, tmp_path, capsys):
    import shutil

    from stableaudio_jax.data.tfrecord import iter_records
    done, redo = tiny_world / "latents", tmp_path / "latents"
    shutil.copytree(done, redo)
    first = sorted(p.name for p in redo.glob("*.tfrecord"))[0]
    (redo / "manifest.json").unlink()  # as after a crash: one shard half written, no manifest yet
    (redo / f"{first}.done.json").unlink()
    (redo / first).rename(redo / f"{first}.partial")
    with open(redo / f"{first}.partial", "r+b") as f:
        f.truncate(1000)
    _cli("encode", "--audio", tiny_world / "audio", "--out", redo, "--vae", tiny_world / "vae",
         "--text-encoder", tiny_world / "text_encoder", *ENCODE)
    assert read_manifest(redo) == read_manifest(done) | {"sources": read_manifest(redo)["sources"]}
    for shard in read_manifest(done)["shards"]:
        assert [r for _, _, r in iter_records(redo / shard["file"])] == [
            r for _, _, r in iter_records(done / shard["file"])]
    code = main([str(a) for a in ["encode", "--audio", tiny_world / "audio", "--out", redo, "--vae",
                                  tiny_world / "vae", "--text-encoder", tiny_world / "text_encoder", *ENCODE,
                                  "--window-frames", 64]])
    assert code == 2 and "holds a partial encode with other settings" in capsys.readouterr().err
    # the same VAE config with other weights (a retrained VAE) would mix two encodings: refused too
    import jax

    from stableaudio_jax.store import VAE, load_vae, save_vae
    vae = load_vae(tiny_world / "vae" / "model")
    save_vae(tmp_path / "retrained", VAE(vae.module, jax.tree_util.tree_map(lambda x: x * 1.01, vae.params),
                                         vae.config))
    code = main([str(a) for a in ["encode", "--audio", tiny_world / "audio", "--out", redo, "--vae",
                                  tmp_path / "retrained", "--text-encoder", tiny_world / "text_encoder", *ENCODE]])
    err = capsys.readouterr().err
    assert code == 2 and "other settings (encoder_config_hash differ" in err, err


UNET = [f"--config.{o}" for o in TINY_WORLD_UNET]  # the eps U-Net of tests/test_diffusion_training.py too


def test_unet_eps_round_trip(tiny_world, tmp_path, capsys):
    """A U-Net trained with the eps objective exports a text-to-audio model that `generate` runs with the samplers
    eps allows (and refuses the others)."""
    workdir = tmp_path / "unet"
    _cli("train", "--config", "configs/unet.py:tiny", "--data", tiny_world / "latents", "--workdir", workdir,
         "--config.training.steps=6", "--config.training.log_every=3", "--no-progress", *UNET)
    info = read_info(workdir / "model")
    diffusion = read_info(workdir / "model" / "diffusion")
    assert info.kind == "text-to-audio" and info.config.sampling.sampler == "ddim"
    assert diffusion.config.model.type == "unet1d" and diffusion.config.diffusion.objective == "eps"
    for sampler, seconds in (("ddim", 0.002), ("ddpm", 0.0025)):
        out = tmp_path / f"{sampler}.wav"
        _cli("generate", _held_out_caption(tiny_world), "--checkpoint", workdir / "model", "--out", out, "--steps", 4,
             "--sampler", sampler, "--seconds", seconds, "--no-progress")
        audio, rate = sf.read(out)
        assert rate == TINY_WORLD_RATE and audio.shape == (round(seconds * TINY_WORLD_RATE),)
        assert np.isfinite(audio).all()
    capsys.readouterr()
    code = main(["generate", "x", "--checkpoint", str(workdir / "model"), "--sampler", "dpmpp-2m", "--steps", "2",
                 "--out", str(tmp_path / "no.wav"), "--no-progress"])
    assert code == 2 and "sampler 'dpmpp-2m' is not available for the 'eps' objective" in capsys.readouterr().err


def _tiny_clap(root, captions):
    """A stored CLAP text encoder with random weights and a byte-level BPE vocabulary of the captions."""
    import jax
    import jax.numpy as jnp
    from tokenizers import ByteLevelBPETokenizer

    from stableaudio_jax.models.clap import ClapTextEncoder
    from stableaudio_jax.store import save_text_encoder
    from stableaudio_jax.store.clap_text import ClapText
    from stableaudio_jax.store.clap_tokenizer import ClapTokenizer
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(captions * 10, vocab_size=300, min_frequency=1,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    (root / "bpe").mkdir(parents=True)
    trainer.save_model(str(root / "bpe"))
    module = ClapTextEncoder(vocab_size=300, width=32, num_layers=2, num_heads=4, intermediate_size=64,
                             max_positions=64, projection_dim=16)
    params = module.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), bool))
    text = ClapText(module, params, ClapTokenizer.from_directory(root / "bpe", 24), source="tiny CLAP")
    return save_text_encoder(root / "clap", text)


def test_clap_conditioned_unet_round_trip(tiny_world, tmp_path, capsys):
    """Stable Audio 1.0's conditioning path: encode with CLAP layer features (unmasked, -2) → train the U-Net →
    export → generate."""
    clap = _tiny_clap(tmp_path, tiny_world_captions(tiny_world))
    latents, workdir = tmp_path / "latents", tmp_path / "unet"
    _cli("encode", "--audio", tiny_world / "audio", "--out", latents, "--vae", tiny_world / "vae",
         "--text-encoder", clap, *ENCODE)  # 48 x 32 features, as the world's T5: the same U-Net step as above
    manifest = read_manifest(latents)
    assert manifest["encoder_config"]["text"]["model"]["width"] == 32 and manifest["text_length"] == 48
    train = ["train", "--config", "configs/unet.py:tiny", "--data", latents, "--workdir", workdir,
             "--config.training.steps=4", "--config.training.log_every=2", "--no-progress", *UNET]
    assert main([str(a) for a in train]) == 2  # a T5 conditioner on CLAP features: refused, with the fix
    assert "encoded by a 'clap' text encoder but this model's conditioner is" in capsys.readouterr().err
    _cli(*train, "--config.conditioning.text.type=clap")
    bundle = read_info(workdir / "model" / "text_encoder")
    assert bundle.config.type == "clap" and sorted(bundle.files) == ["merges.txt", "vocab.json"]
    out = tmp_path / "clap.wav"
    _cli("generate", _held_out_caption(tiny_world), "--checkpoint", workdir / "model", "--out", out, "--steps", 3,
         "--seconds", 0.002, "--no-progress")
    audio, rate = sf.read(out)
    assert rate == TINY_WORLD_RATE and audio.shape == (round(0.002 * TINY_WORLD_RATE),) and np.isfinite(audio).all()


def test_t5_and_clap_together_round_trip(tiny_world, tmp_path):
    """Two text conditioners: encode with T5 and CLAP (their features one after the other) → train the tiny DiT
    configured for both (configs/dit.py:tiny+clap) → the exported model stores both → generate."""
    clap = _tiny_clap(tmp_path, tiny_world_captions(tiny_world))
    latents, workdir = tmp_path / "latents", tmp_path / "dit"
    _cli("encode", "--audio", tiny_world / "audio", "--out", latents, "--vae", tiny_world / "vae",
         "--text-encoder", f"t5={tiny_world / 'text_encoder'}", "--text-encoder", f"clap={clap}", *ENCODE,
         "--max-length", 24, 16)
    manifest = read_manifest(latents)
    assert manifest["text_length"] == 24 + 16 and manifest["text_dim"] == 32
    assert manifest["encoder_config"]["text"]["model"]["order"] == ["t5", "clap"]
    _cli("train", "--config", "configs/dit.py:tiny+clap", "--data", latents, "--workdir", workdir,
         "--config.training.steps=4", "--config.training.log_every=2", "--no-progress", *_dit_on_world(tiny_world))
    text = read_info(workdir / "model" / "text_encoder")
    assert text.config.type == "multi" and sorted(text.components) == ["clap", "t5"]
    diffusion = read_info(workdir / "model" / "diffusion")
    assert list(diffusion.config.conditioning.text.order) == ["t5", "clap"]
    assert diffusion.config.conditioning.text.parts.clap.model.width == 32  # the data's CLAP sizes were adopted
    out = tmp_path / "both.wav"
    _cli("generate", _held_out_caption(tiny_world), "--checkpoint", workdir / "model", "--out", out, "--steps", 3,
         "--seconds", 0.002, "--no-progress")
    audio, rate = sf.read(out)
    assert rate == TINY_WORLD_RATE and audio.shape == (round(0.002 * TINY_WORLD_RATE),) and np.isfinite(audio).all()


def _first_step_loss(config, data_dir, params):
    """The loss of a fresh run's first step, computed by hand: the run's first batch and noise, ``params``."""
    import jax

    from stableaudio_jax.parallel.distributed import global_batch
    from stableaudio_jax.parallel.mesh import make_mesh
    from stableaudio_jax.training import diffusion_steps
    from stableaudio_jax.training.latent_source import model_batch, read_latents
    mesh = make_mesh(config.mesh)
    _, data = read_latents(config, str(data_dir), config.training.batch_size, TINY_WORLD_LATENT_CHANNELS)
    batch = global_batch(model_batch(next(data)), diffusion_steps.batch_sharding(mesh))
    compiled = diffusion_steps.compiled(config, mesh, 48, 32)
    run = compiled.run
    state = diffusion_steps.DiffusionTrainState(
        step=np.zeros((), np.int32), params=params, opt=run.tx.init(params), ema=params["denoiser"],
        rng=jax.random.split(jax.random.key(config.seed))[1])
    _, metrics = compiled.step(jax.device_put(state, compiled.shardings), batch)
    return float(metrics["loss"])


def test_init_from_an_exported_model_starts_from_its_weights_exactly(tiny_world, tmp_path, capsys):
    """`train --init-from MODEL` takes the model's config and weights: its first loss is the loss of the stored
    weights on the same batch; an override that changes shapes is refused with the weights it breaks."""
    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.store import load_diffusion
    from stableaudio_jax.training.init_from import diffusion_config_from_model
    source, workdir = tiny_world / "dit" / "model", tmp_path / "finetune"
    args = ["train", "--config", "configs/dit.py:tiny", "--data", tiny_world / "latents", "--workdir", workdir,
            "--init-from", source, "--config.training.steps=2", "--config.training.log_every=1", "--no-progress"]
    _cli(*args)
    first = [m["train/loss"] for m in read_metrics(workdir) if "train/loss" in m][0]
    config = diffusion_config_from_model(load_config("configs/dit.py:tiny"), str(source))
    expected = _first_step_loss(config, tiny_world / "latents", load_diffusion(source).params)
    assert first == pytest.approx(expected, rel=1e-6, abs=1e-7)
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["training"]["init_from"] == str(source)
    capsys.readouterr()
    assert main([str(a) for a in args[:-3]] + ["--workdir", str(tmp_path / "deeper"),
                                              "--config.model.depth=3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "does not match the stored weights" in err and "denoiser/params/" in err


def test_train_vae_init_from_loads_the_vae_and_a_fresh_discriminator(tiny_world, tmp_path):
    import jax

    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.parallel.mesh import make_mesh
    from stableaudio_jax.store import load_vae
    from stableaudio_jax.training import vae_steps
    from stableaudio_jax.training.init_from import start_vae_from_model, vae_config_from_model
    source = tiny_world / "vae" / "model"
    config = vae_config_from_model(load_config("configs/vae.py:tiny", tiny_world_vae_overrides()), str(source))
    compiled = vae_steps.compiled(config, make_mesh(config.mesh))
    state = start_vae_from_model(compiled, str(source), config.seed)()
    stored = load_vae(source).params
    for ours, theirs in ((state.gen_params, stored), (state.ema_params, stored)):
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(ours),
                                                        jax.tree_util.tree_leaves(theirs)))
    assert not any(np.asarray(m).any() for m in jax.tree_util.tree_leaves(state.gen_opt) if np.ndim(m))
    _cli("train-vae", "--config", "configs/vae.py:tiny", "--data", tiny_world / "audio", "--workdir",
         tmp_path / "vae", "--init-from", source, "--config.training.steps=2", "--no-progress",
         *[f"--config.{o}" for o in tiny_world_vae_overrides()])
    assert read_info(tmp_path / "vae" / "model").kind == "vae"


def test_lora_trains_only_adapters_and_generates_with_them(tiny_world, tmp_path):
    """A rank-8 LoRA on a barely trained model (one step) learns the data; only the adapters are checkpointed and
    exported; `generate --lora` and the merged export give the same audio; the base files are untouched."""
    from stableaudio_jax.store.adapters import load_lora
    from stableaudio_jax.training.checkpoints import TrainCheckpointer
    base = tmp_path / "base"
    _cli("train", "--config", "configs/dit.py:tiny", "--data", tiny_world / "latents", "--workdir", base,
         "--config.training.steps=1", "--no-progress", *_dit_on_world(tiny_world))
    before = read_info(base / "model").component_sha256
    workdir = tmp_path / "lora"
    _cli("train", "--config", "configs/dit.py:tiny", "--data", tiny_world / "latents", "--workdir", workdir,
         "--init-from", base / "model", "--config.training.lora.rank=8", "--config.training.lora.targets=attention+mlp",
         "--config.training.optimizer.lr=3e-3", "--config.training.steps=30", "--config.training.log_every=5",
         "--no-progress")
    logged = [m["train/loss"] for m in read_metrics(workdir) if "train/loss" in m]
    assert len(logged) == 6 and np.mean(logged[-3:]) < 0.7 * np.mean(logged[:2]), logged
    checkpointer = TrainCheckpointer(workdir, async_save=False)
    try:
        state, _, _ = checkpointer.restore(None)
    finally:
        checkpointer.close()
    assert set(state["params"]) == {"lora"} and set(state["ema"]) == set(state["params"]["lora"])  # no base
    adapter = load_lora(workdir / "model")
    assert read_info(workdir / "model").kind == "lora" and adapter.spec.rank == 8
    assert adapter.base["sha256"] == before["diffusion"]
    assert any(np.abs(np.asarray(b)).max() > 0 for b in _leaves_named(adapter.adapters["lora"], "b"))
    _cli("export", "--workdir", workdir, "--merged", "--out", tmp_path / "merged")
    assert read_info(base / "model").component_sha256 == before  # the base model is never written
    outs = {}
    for name, model, extra in (("lora", base / "model", ["--lora", f"{workdir / 'model'}:1.0"]),
                               ("merged", tmp_path / "merged", []), ("base", base / "model", [])):
        outs[name] = tmp_path / f"{name}.wav"
        _cli("generate", _held_out_caption(tiny_world), "--checkpoint", model, "--out", outs[name], "--steps", 8,
             "--seed", 3,
             "--no-progress", *extra)
    lora_audio, merged, plain = (sf.read(outs[k])[0] for k in ("lora", "merged", "base"))
    assert lora_audio.shape == (64 * 256,) and np.isfinite(lora_audio).all()  # the 64-frame crop, mono
    np.testing.assert_allclose(lora_audio, merged, atol=1e-5)
    assert np.abs(lora_audio - plain).max() > 1e-3


def _leaves_named(tree, name):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves_named(value, name)
        elif key == name:
            yield value
