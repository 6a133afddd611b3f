"""Diffusion training on pre-encoded latents: exact resume, the U-Net trains too, the synthetic source, and the
errors for data that cannot feed the model."""
import os

import jax
import numpy as np
import pytest

from stableaudio_jax.config_loader import load_config
from stableaudio_jax.data.latent_records import read_manifest, write_manifest
from stableaudio_jax.training.diffusion_train import train_diffusion
from stableaudio_jax.training.metrics import read_metrics
from helpers import TEXT_DIM, TEXT_LENGTH, TINY_WORLD_UNET, assert_trees_equal, restored_state, write_latents

@pytest.fixture(scope="module")
def latents(tmp_path_factory):
    return write_latents(tmp_path_factory.mktemp("latents"))


def _config(*overrides, spec="configs/dit.py:tiny"):
    return load_config(spec, ["training.log_every=3", "training.checkpoint_every=3", *overrides])


@pytest.fixture(scope="module")
def straight(latents, tmp_path_factory):
    """Six steps of the tiny DiT in one go, the device EMA: what the resumed runs below must equal bit for bit
    (one run shared by the tests that compare against it)."""
    workdir = tmp_path_factory.mktemp("straight")
    train_diffusion(_config("training.steps=6"), str(workdir), latents)
    return workdir


def test_resume_is_exact(latents, straight, tmp_path):
    train_diffusion(_config("training.steps=6"), str(tmp_path / "halves"), latents, max_steps=3)
    train_diffusion(_config("training.steps=6"), str(tmp_path / "halves"), latents)
    (a, data_a), (b, data_b) = restored_state(straight), restored_state(tmp_path / "halves")
    assert data_a == data_b
    assert len(jax.tree_util.tree_leaves(a)) > 10
    assert_trees_equal(a, b)
    logged = [m["train/loss"] for m in read_metrics(tmp_path / "halves") if "train/loss" in m]
    once = [m["train/loss"] for m in read_metrics(straight) if "train/loss" in m]
    assert logged == once and len(logged) == 2


def test_unet_trains_on_the_tiny_worlds_latents(tiny_world, tmp_path):
    # the tiny U-Net cut to two levels, eps, on the tiny world's latents: the U-Net of tests/test_round_trip.py
    # (one compile serves both). context_max_length is derived from the data: 48 text tokens + 2 timing tokens.
    config = _config("training.steps=60", *TINY_WORLD_UNET, "training.log_every=5", "training.checkpoint_every=60",
                     spec="configs/unet.py:tiny")
    train_diffusion(config, str(tmp_path / "unet"), str(tiny_world / "latents"))
    logged = [m["train/loss"] for m in read_metrics(tmp_path / "unet") if "train/loss" in m]
    print("U-Net eps losses", np.round(logged, 3))
    assert len(logged) == 12 and np.isfinite(logged).all()
    assert np.mean(logged[-3:]) < 0.5 * np.mean(logged[:2]), logged  # it learns: a stated margin of 50%
    state, _ = restored_state(tmp_path / "unet")
    assert int(state["step"]) == 60 and set(state["params"]) == {"denoiser", "timing"}
    null = state["params"]["denoiser"]["params"]["fixed_embedding"]["embed"]["embedding"]
    assert null.shape == (50, 32)


def test_synthetic_source_runs_and_exports_the_diffusion_model(tmp_path):
    from stableaudio_jax.store import load_diffusion, read_info
    metrics = train_diffusion(_config("training.steps=2", f"training.data.synthetic_text_length={TEXT_LENGTH}"),
                              str(tmp_path / "synthetic"), "synthetic")
    assert np.isfinite(metrics["train/loss"]) and metrics["perf/audio_seconds_per_s"] > 0
    assert metrics["perf/tflops_per_s"] > 0  # model FLOPs per step over its time (and MFU on a known chip)
    assert "perf/mfu" not in metrics  # a CPU has no published bf16 peak here
    # no VAE or text encoder is known for synthetic data: the denoiser and its conditioners alone
    info = read_info(tmp_path / "synthetic" / "model")
    assert info.kind == "diffusion" and info.provenance["step"] == 2
    model = load_diffusion(tmp_path / "synthetic" / "model")
    state, _ = restored_state(tmp_path / "synthetic")
    assert_trees_equal(model.params["denoiser"], state["ema"])
    assert_trees_equal(model.params["timing"], state["params"]["timing"])


@pytest.mark.parametrize("cond_dim,projected", [(32, True), (None, False)])
def test_a_text_encoder_of_another_width_needs_no_other_change(tmp_path, cond_dim, projected):
    """48-wide text features: with cond_dim 32 a projection appears; with cond_dim unset every width follows 48."""
    wide = write_latents(tmp_path / "wide", files=2, per_file=4, text_dim=48)
    overrides = ["training.steps=2"] + ([] if cond_dim else ["conditioning.cond_dim=None"])
    train_diffusion(_config(*overrides), str(tmp_path / "run"), wide)
    state, _ = restored_state(tmp_path / "run")
    assert ("text_projection" in state["params"]) == projected
    width = 32 if projected else 48
    assert state["params"]["timing"]["params"]["seconds_start"]["proj"]["kernel"].shape[-1] == width
    assert state["params"]["denoiser"]["params"]["to_cond_embed"]["fc1"]["kernel"].shape[0] == width
    assert state["params"]["denoiser"]["params"]["to_global_embed"]["fc1"]["kernel"].shape[0] == 2 * width


def test_data_that_cannot_feed_the_model_is_refused(latents, tmp_path):
    manifest = os.path.join(latents, "manifest.json")
    with pytest.raises(ValueError, match=r"manifest.json: latents have 4 channels but the model's io_channels is 8"):
        train_diffusion(_config("model.io_channels=8"), str(tmp_path / "a"), latents)
    with pytest.raises(ValueError, match=r"manifest.json: the latents were encoded by a VAE config"):
        train_diffusion(_config("vae.channels=16"), str(tmp_path / "b"), latents)
    with pytest.raises(ValueError, match=r"config.model.cond_token_dim=64 disagrees with conditioning.cond_dim=32"):
        train_diffusion(_config("model.cond_token_dim=64"), str(tmp_path / "c"), latents)
    with pytest.raises(ValueError, match=r"text embeddings are 32 wide but config.conditioning.text.width is 40"):
        train_diffusion(_config("conditioning.text.width=40"), str(tmp_path / "e"), latents)
    with pytest.raises(ValueError, match=r"training.batch_size=6 cannot be split over the mesh's data axes "
                                         r"\{'data': 8, 'fsdp': 1\} \(8 shards\)"):
        train_diffusion(_config("training.batch_size=6"), str(tmp_path / "f"), latents)
    ids = write_latents(tmp_path / "ids", files=1, per_file=2, text="ids")
    with pytest.raises(ValueError, match=r"text is 'ids'.*--text embeddings"):
        train_diffusion(_config(), str(tmp_path / "d"), ids)
    assert os.path.isfile(manifest)


def test_resuming_on_re_encoded_data_raises(latents, tmp_path):
    other = write_latents(tmp_path / "other", files=2, per_file=4)
    train_diffusion(_config("training.steps=2"), str(tmp_path / "run"), other)
    data = read_manifest(other)
    data["encoder_config_hash"] = "fedcba9876543210"
    write_manifest(other, data)
    with pytest.raises(ValueError, match=r"differs from this run's 0123456789abcdef"):
        train_diffusion(_config("training.steps=10"), str(tmp_path / "run"), other)


def test_an_ema_in_host_memory_trains_and_resumes_as_on_the_device_and_none_exports_the_weights(latents, straight,
                                                                                                  tmp_path):
    """training.ema.place: 'host' keeps the EMA in pinned host memory (sharded as the weights) with the same
    arithmetic, resumable; 'off' keeps no EMA and exports the online weights."""
    from stableaudio_jax.parallel.mesh import make_mesh
    from stableaudio_jax.store import load_diffusion
    from stableaudio_jax.training import diffusion_steps
    host = _config("training.steps=6", "training.ema.place=host")
    train_diffusion(host, str(tmp_path / "host"), latents, max_steps=3)
    train_diffusion(host, str(tmp_path / "host"), latents)  # resumes the host EMA from step 3's checkpoint
    (device, _), (on_host, _) = restored_state(straight), restored_state(tmp_path / "host")
    assert_trees_equal(device, on_host)
    compiled = diffusion_steps.compiled(host, make_mesh(host.mesh), TEXT_LENGTH, TEXT_DIM)
    kinds = {s.memory_kind for s in jax.tree_util.tree_leaves(compiled.shardings.ema)}
    assert kinds == {"pinned_host"}
    assert {s.memory_kind for s in jax.tree_util.tree_leaves(compiled.shardings.params)} == {"device"}

    train_diffusion(_config("training.steps=6", "training.ema.place=off"), str(tmp_path / "off"), latents)
    off, _ = restored_state(tmp_path / "off")
    assert off["ema"] is None
    assert_trees_equal(off["params"], device["params"])  # the EMA never feeds the weights
    assert_trees_equal(load_diffusion(tmp_path / "off" / "model").params["denoiser"], off["params"]["denoiser"])
    with pytest.raises(ValueError, match=r"training.ema.place='gpu': expected one of \('device', 'host', 'off'\)"):
        train_diffusion(_config("training.ema.place=gpu"), str(tmp_path / "bad"), latents)
