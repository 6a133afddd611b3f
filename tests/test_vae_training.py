"""VAE training end to end on the 8-device CPU mesh with FSDP: the loss falls, resume is exact, checkpoints restore
onto other meshes, and broken situations (non-finite loss, corrupt or mismatched checkpoints) stop loudly."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from stableaudio_jax.config_loader import load_config
from stableaudio_jax.parallel.mesh import make_mesh
from stableaudio_jax.training import vae_steps
from stableaudio_jax.training.checkpoints import CheckpointError, TrainCheckpointer
from stableaudio_jax.training.loop import NonFiniteLossError, abstract_with_shardings
from stableaudio_jax.training.metrics import read_metrics
from stableaudio_jax.training.vae_train import train_vae
from helpers import SMALL_VAE_LOSSES, assert_trees_equal, write_music_folder

FSDP = ["mesh.data=2", "mesh.fsdp=4"]


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    return write_music_folder(tmp_path_factory.mktemp("music"))


# The mechanics tests (resume, restore, errors) use one STFT resolution and one discriminator scale: the same code,
# a fraction of the compile time. The learning test uses the full recipe.
def _config(*overrides, mesh=FSDP, small=True):
    return load_config("configs/vae.py:tiny", [*mesh, *(SMALL_VAE_LOSSES if small else []), *overrides])


def test_training_reduces_the_reconstruction_loss(music, tmp_path):
    config = _config("training.steps=40", "training.log_every=10", "training.checkpoint_every=40", small=False)
    train_vae(config, str(tmp_path / "run"), str(music))
    records = [r for r in read_metrics(tmp_path / "run") if "train/spectral_loss" in r]
    losses = [r["train/spectral_loss"] for r in records]
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    # the MRSTFT reconstruction loss falls by at least 10% in 20 generator updates (first log vs last two)
    assert np.mean(losses[-2:]) < 0.9 * losses[0], losses
    assert all(np.isfinite(r["train/discriminator_loss"]) for r in records)
    first = read_metrics(tmp_path / "run")[0]
    assert first["data/files"] == 6 and first["data/skipped_files"] == 0
    assert records[-1]["perf/audio_seconds_per_s"] > 0
    assert os.listdir(tmp_path / "run" / "tensorboard")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["channels"] == 8


FOUR = ("training.steps=4", "training.log_every=2", "training.checkpoint_every=4")


@pytest.fixture(scope="module")
def straight(music, tmp_path_factory):
    """Four steps (2 generator, 2 discriminator updates) in one go on the FSDP mesh: the run the resumed one must
    equal, and the checkpoint the broken-checkpoint test corrupts (a copy of it)."""
    workdir = tmp_path_factory.mktemp("vae") / "straight"
    train_vae(_config(*FOUR), str(workdir), str(music))
    return workdir


def _restore(workdir, config, mesh):
    compiled = vae_steps.compiled(config, mesh)
    state, data, saved = TrainCheckpointer(workdir).restore(abstract_with_shardings(compiled.abstract,
                                                                                     compiled.shardings))
    return state, data


def test_resume_is_exact_and_restores_onto_other_meshes(music, straight, tmp_path, caplog):
    from stableaudio_jax.training.sources import resolve_vae
    config = _config(*FOUR)
    straight, split = str(straight), str(tmp_path / "split")
    train_vae(config, split, str(music), max_steps=2)  # stop halfway (one update of each) ...
    assert TrainCheckpointer(split).latest_step() == 2
    # an unfinished run has no exported VAE: its latest checkpoint is used, and the log says which
    assert not os.path.exists(os.path.join(split, "model"))
    with caplog.at_level("WARNING"):
        assert resolve_vae(split).source == split
    assert "has no exported model (the run is at step 2 of 4): using checkpoint step 2" in caplog.text
    train_vae(config, split, str(music))  # ... and resume to the end
    mesh8 = make_mesh(config.mesh)
    a, data_a = _restore(straight, config, mesh8)
    b, data_b = _restore(split, config, mesh8)
    assert int(a.step) == 4 and int(a.gen_steps) == 2 and int(a.disc_steps) == 2 and data_a == data_b
    assert_trees_equal(a, b)  # bit-identical on CPU
    exported = resolve_vae(split)  # the finished run exported its EMA weights: preferred over checkpoints
    assert exported.source == os.path.join(split, "model")
    assert_trees_equal(exported.params, a.ema_params)
    # the 8-device checkpoint restores onto 4 devices and onto 1, with the same values
    for devices, mesh_shape in ((jax.devices()[:4], ["mesh.data=2", "mesh.fsdp=2"]), (jax.devices()[:1],
                                                                                        ["mesh.data=1"])):
        config_n = _config(*FOUR, mesh=mesh_shape)
        mesh = make_mesh(config_n.mesh, devices=devices)
        c, _ = _restore(straight, config_n, mesh)
        leaf = c.gen_params["params"]["decoder"]["blocks_0"]["conv_t"]["weight_v"]
        assert len(leaf.sharding.device_set) == len(devices)
        assert_trees_equal(a, c)


def test_non_finite_loss_stops_without_saving_it(music, tmp_path):
    # a warm-up-only run (the generator's spectral step, which carries the same finite flag): one compile
    config = _config("training.steps=40", "training.warmup_steps=40", "training.log_every=2",
                     "training.checkpoint_every=2", "training.gen_optimizer.lr=1e12", "training.disc_optimizer.lr=1e12",
                     "training.gen_optimizer.schedule.warmup=0.0", "training.disc_optimizer.schedule.warmup=0.0")
    workdir = str(tmp_path / "nan")
    with pytest.raises(NonFiniteLossError, match="non-finite loss between steps"):
        train_vae(config, workdir, str(music))
    latest = TrainCheckpointer(workdir).latest_step()
    if latest is not None:  # every checkpoint that was written holds finite values
        state, _ = _restore(workdir, config, make_mesh(config.mesh))
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state.gen_params))


def test_broken_or_mismatched_checkpoints_raise(music, straight, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(straight, workdir)  # a finished 4-step run (a copy: the fixture's run is shared)
    # no memory check: it would compile the 16-channel steps only to be refused by the checkpoint's config
    other = _config("training.steps=16", "model.channels=16", "training.check_memory=False")
    with pytest.raises(CheckpointError, match="different model config"):
        train_vae(other, str(workdir), str(music))
    broken = tmp_path / "broken"
    shutil.copytree(workdir, broken)
    state_dir = broken / "checkpoints" / "4" / "state"
    assert state_dir.is_dir()
    for path in state_dir.rglob("*"):
        if path.is_file() and "manifest" in path.name:
            path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot restore the train state"):
        train_vae(_config("training.steps=16"), str(broken), str(music))


def test_a_single_process_save_writes_each_replicated_array_whole(tmp_path, caplog):
    """orbax's replica-parallel save would slice every replicated array between its 8 replicas (a compiled slice
    per shape and device) although one process writes them all; the checkpoint is written without those slices
    and restores bit-equal."""
    import logging

    from jax.sharding import NamedSharding, PartitionSpec
    mesh = make_mesh(load_config("configs/vae.py:tiny", ["mesh.data=8"]).mesh)
    state = {f"w{i}": jax.device_put(np.full((8, 3 + i), i, np.float32), NamedSharding(mesh, PartitionSpec()))
             for i in range(4)}
    checkpointer = TrainCheckpointer(tmp_path)
    with caplog.at_level(logging.WARNING, logger="jax._src.interpreters.pxla"), jax.log_compiles(True):
        checkpointer.save(1, state, {}, {})
        checkpointer.wait()
    assert not [r for r in caplog.records if "Compiling jit(slice)" in r.getMessage()]
    restored, _, _ = checkpointer.restore(jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state))
    assert_trees_equal(restored, state)
    checkpointer.close()
