"""The quickstart presets are what configs/quickstart.py says they are: cpu-long's data, VAE recipe, compression
and model sizes against cpu's, and the gpu/tpu presets' bigger models with the reference's hyper-parameters
(stable-audio-tools' SAO VAE and DiT training sections). Shapes only (``jax.eval_shape``): nothing is compiled."""
import jax
import numpy as np
import pytest

from stableaudio_jax.config_loader import load_config
from stableaudio_jax.data.demo_data import split_quotas
from stableaudio_jax.data.demo_music import INSTRUMENTS
from stableaudio_jax.training import diffusion_steps, vae_steps


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _models(name):
    """(quickstart config, VAE config, VAE parameters, DiT config, DiT parameters) of a preset, as its stages build
    them."""
    q = load_config(f"configs/quickstart.py:{name}")
    vae = load_config(f"configs/{q.vae.config}", list(q.vae.overrides))
    run = vae_steps.build(vae)
    vae_params = _count(vae_steps.abstract_state(run, vae.training.crop_samples, vae.model.audio_channels).gen_params)
    dit = load_config(f"configs/{q.dit.config}", list(q.dit.overrides))
    dit_params = _count(diffusion_steps.abstract_state(diffusion_steps.build(dit, q.text.max_length,
                                                                             q.text.d_model)).params)
    return q, vae, vae_params, dit, dit_params


@pytest.fixture(scope="module")
def cpu():
    return _models("cpu")


def _floats_ratio(vae) -> float:
    """Audio floats per second over latent floats per second."""
    m = vae.model
    return m.sample_rate * m.audio_channels / (m.sample_rate / np.prod(m.strides) * m.latent_dim)


def test_cpu_long_is_the_long_record_the_learning_issue_asks_for(cpu):
    q, vae, vae_params, dit, dit_params = _models("cpu-long")
    assert sorted(q.demo.instruments) == sorted(INSTRUMENTS) and q.demo.clips >= 1500  # all 8 instruments
    held_out = split_quotas(q.demo.clips)["test"]
    assert held_out >= 24 * len(INSTRUMENTS) and q.evaluate.clips == held_out  # all of them evaluated
    assert q.evaluate.timing_prompts >= 48
    t = vae.training
    assert 0 < t.warmup_steps < q.vae.steps  # the adversarial + feature-matching phase follows the warm-up
    assert t.loss_weights.adversarial == 0.1 and t.loss_weights.feature_matching == 5.0  # the reference's weights
    assert _floats_ratio(vae) == 32.0
    # several times the cpu preset's models: 3x its VAE, 5.5x its DiT
    assert vae_params > 2.9 * cpu[2] and dit_params > 5 * cpu[4]
    window_s = q.encode.window_frames * np.prod(vae.model.strides) / vae.model.sample_rate
    assert window_s >= q.demo.seconds  # every clip fits the DiT's window


@pytest.mark.parametrize("name", ["gpu", "tpu"])
def test_gpu_and_tpu_train_bigger_models_with_the_reference_hyper_parameters(cpu, name):
    q, vae, vae_params, dit, dit_params = _models(name)
    assert vae_params > 50 * cpu[2] and dit_params > 30 * cpu[4]
    assert _floats_ratio(vae) == 64.0 and tuple(vae.model.strides) == (2, 4, 4, 8, 8)  # SAO's: 2048x down, 64 ch
    sao = load_config("configs/vae.py:sao").training
    t = vae.training
    for key in ("gen_optimizer", "disc_optimizer", "spectral", "loss_weights"):
        assert t[key].to_dict() == sao[key].to_dict(), key
    assert t.discriminator.to_dict() == sao.discriminator.to_dict()
    assert t.warmup_steps == 0 and t.sample_posterior  # SAO's VAE config: no spectral-only warm-up
    reference = load_config("configs/dit.py:sao").training
    assert dit.training.optimizer.to_dict() == reference.optimizer.to_dict()
    assert dit.training.timestep_sampler == reference.timestep_sampler
    assert q.encode.window_frames * 2048 / 44100 >= q.demo.seconds


def test_a_stopped_quickstart_keeps_the_times_of_the_stages_it_finished(tmp_path):
    """quickstart.json is written as each stage ends: a run stopped during training keeps its earlier stages'
    times, and the resumed invocation that finishes is added beside it, not over it."""
    import json
    from stableaudio_jax.commands.quickstart import _record
    path = str(tmp_path / "quickstart.json")
    _record(path, "cpu-long", "dit", "first", {"demo-data": 400.0}, done=False)
    _record(path, "cpu-long", "dit", "first", {"demo-data": 400.0, "text encoder": 5.0}, done=False)
    runs = json.load(open(path))["runs"]
    assert runs["dit"]["invocations"] == [{"started": "first", "finished": False,
                                           "stage_seconds": {"demo-data": 400.0, "text encoder": 5.0}}]
    assert "stage_seconds" not in runs["dit"]  # no invocation has finished yet
    _record(path, "cpu-long", "dit", "second", {"demo-data": 0.5, "text encoder": 0.1}, done=True)
    run = json.load(open(path))["runs"]["dit"]
    assert [h["started"] for h in run["invocations"]] == ["first", "second"]
    assert run["stage_seconds"] == {"demo-data": 0.5, "text encoder": 0.1} and run["total_seconds"] == 0.6


def test_a_training_stage_stopped_by_a_signal_ends_the_quickstart_there(tmp_path, monkeypatch, capfd):
    """SIGINT/SIGTERM during train-vae saves a checkpoint and the training returns early; the quickstart must stop
    there (exit 75, the stage's time kept, not finished) rather than encode the data with the unfinished VAE's
    checkpoint."""
    import json
    import jax.numpy as jnp
    from stableaudio_jax.cli import main
    from stableaudio_jax.commands import quickstart_stages as stages
    from stableaudio_jax.training import vae_train
    from stableaudio_jax.training.checkpoints import TrainCheckpointer
    ran = []
    for name in ("demo_data", "text_encoder", "ingest", "encode", "train", "generate", "evaluate"):
        monkeypatch.setattr(stages, name, lambda *a, name=name: ran.append(name))

    def stopped_at_step_7(config, workdir, data_dir, progress=False):  # what a stop signal leaves behind
        checkpointer = TrainCheckpointer(workdir, async_save=False)
        checkpointer.save(7, {"w": jnp.zeros(2)}, {}, config)
        checkpointer.close()
    monkeypatch.setattr(vae_train, "train_vae", stopped_at_step_7)
    workdir = tmp_path / "run"
    assert main(["quickstart", "--workdir", str(workdir), "--preset", "cpu", "--no-progress"]) == 75
    assert ran == ["demo_data", "text_encoder", "ingest"]  # nothing after train-vae
    steps = load_config("configs/quickstart.py:cpu").vae.steps
    logged = capfd.readouterr().err
    assert f"train-vae stopped at step 7 of {steps}" in logged and "rerun the same command" in logged
    run = json.loads((workdir / "quickstart.json").read_text())["runs"]["dit"]
    assert list(run["invocations"][0]["stage_seconds"])[-1] == "train-vae"
    assert run["invocations"][0]["finished"] is False and "stage_seconds" not in run
