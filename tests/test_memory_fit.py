"""A run that cannot fit stops before it starts: the compiled step's per-device need is compared with a device's
memory, and a step that does not fit is refused with one line naming the need, the capacity and settings that fit
(each compiled to check it); the suggested settings start; --force starts anyway."""
import re

import jax
import ml_collections

from stableaudio_jax.cli import main
from stableaudio_jax.config_loader import load_config
from stableaudio_jax.parallel.mesh import make_mesh
from stableaudio_jax.training import diffusion_steps
from stableaudio_jax.training.memory_fit import GiB, Need, device_capacity
from stableaudio_jax.training.metrics import read_metrics

# the tiny DiT narrowed further: every assertion below compares needs with each other, not with fixed sizes
NARROW = ["model.embed_dim=128", "model.depth=1"]
DIT = ["train", "--config", "configs/dit.py:tiny", "--data", "synthetic", "--config.training.steps=2",
       "--config.training.log_every=1", "--no-progress", *(f"--config.{o}" for o in NARROW)]
TEXT_LENGTH, TEXT_WIDTH = 128, 32  # synthetic data's text shape for the tiny DiT config


def _need(batch: int) -> int:
    config = load_config("configs/dit.py:tiny", [*NARROW, f"training.batch_size={batch}"])
    compiled = diffusion_steps.compiled(config, make_mesh(config.mesh), TEXT_LENGTH, TEXT_WIDTH)
    return Need.of(compiled.lower(batch).compile()).total


def test_a_step_that_cannot_fit_is_refused_before_its_first_step_and_the_plan_starts(tmp_path, capsys):
    big, small = _need(64), _need(8)
    assert small < big  # the activations grow with the batch: the check sees a real difference
    capacity = f"--config.training.device_memory_gib={(big + small) / 2 / GiB:.6f}"
    workdir = tmp_path / "run"
    code = main([*DIT, "--workdir", str(workdir), "--config.training.batch_size=64", capacity])
    err = capsys.readouterr().err
    assert code == 2, err
    line = next(l for l in err.splitlines() if "error:" in l)
    assert f"needs {big / GiB:.2f} GiB" in line and "per device but a device has" in line
    assert "(training.device_memory_gib)" in line and "--force starts anyway" in line
    assert not list((workdir / "checkpoints").iterdir()) and not (workdir / "config.json").exists()
    plan = re.search(r"settings that fit: (.*?) \(([0-9.]+) GiB\)", line)
    assert plan, line
    flags = plan.group(1).split()
    assert flags[0].startswith("--config.training.batch_size=") and 8 <= int(flags[0].split("=")[1]) < 64
    assert float(plan.group(2)) * GiB <= (big + small) / 2 + 0.01 * GiB

    # the run with the suggested settings starts and trains
    assert main([*DIT, "--workdir", str(tmp_path / "planned"), capacity, *flags]) == 0
    assert [m["step"] for m in read_metrics(str(tmp_path / "planned")) if "train/loss" in m] == [1, 2]
    # and the original settings start with --force
    assert main([*DIT, "--workdir", str(tmp_path / "forced"), "--config.training.batch_size=64", capacity,
                 "--force", "--max-steps", "1"]) == 0


VAE = ["--config.mesh.data=2", "--config.mesh.fsdp=4", "--config.training.spectral.fft_sizes=(256,)",
       "--config.training.spectral.hop_sizes=(64,)", "--config.training.discriminator.n_ffts=(128,)",
       "--config.training.discriminator.hops=(32,)"]


def test_train_vae_checks_its_steps_too(tmp_path, capsys):
    import numpy as np
    import soundfile as sf
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", 0.3 * np.random.default_rng(0).standard_normal((44100, 2)), 44100)
    # settings under which no alternative exists (batch 8 = one example per fsdp shard, remat on, fsdp over all
    # devices) and a warm-up-only run: one step compiled, the refusal without the planner's search (whose
    # candidates test_a_step_that_cannot_fit... compiles and checks)
    settled = [*VAE, "--config.mesh.data=1", "--config.mesh.fsdp=8", "--config.model.remat=true",
               "--config.training.warmup_steps=1"]
    code = main(["train-vae", "--config", "configs/vae.py:tiny", "--data", str(audio), "--workdir",
                 str(tmp_path / "vae"), "--config.training.steps=1", "--config.training.device_memory_gib=0.0001",
                 "--no-progress", *settled])
    err = capsys.readouterr().err
    assert code == 2 and "train-vae: the compiled step needs" in err, err
    assert "a device has 0.00 GiB (training.device_memory_gib)" in err
    assert "settings that fit" not in err


def test_capacity_on_cpu_is_the_hosts_available_memory_over_its_devices():
    config = ml_collections.ConfigDict({"training": {"device_memory_gib": None}})
    capacity, source = device_capacity(config)
    with open("/proc/meminfo") as f:
        total = int(next(l for l in f if l.startswith("MemTotal")).split()[1]) * 1024
    assert 0 < capacity <= total // jax.local_device_count()
    assert "host memory available" in source and f"over {jax.local_device_count()} local cpu devices" in source
    config.training.device_memory_gib = 1.5
    assert device_capacity(config) == (int(1.5 * GiB), "training.device_memory_gib")



def test_a_warmup_only_vae_run_checks_only_the_step_it_takes(monkeypatch):
    """Every step of a run with ``warmup_steps >= steps`` is a warm-up step (the CPU quickstart's VAE): the memory
    check compiles that step alone, not the generator's and discriminator's adversarial steps it never takes."""
    import dataclasses

    from stableaudio_jax.training import vae_steps, vae_train
    from stableaudio_jax.training.vae_train import VAERun
    lowered = []

    class Recorded:  # a compiled step that notes which step the check lowers
        def __init__(self, name, step):
            self.name, self.step = name, step

        def lower(self, *args):
            lowered.append(self.name)
            return self.step.lower(*args)

    original = vae_steps.compiled

    def recording(config, mesh):
        c = original(config, mesh)
        names = ("warmup_step", "generator_step", "discriminator_step")
        return dataclasses.replace(c, **{n: Recorded(n, getattr(c, n)) for n in names})
    monkeypatch.setattr(vae_train.vae_steps, "compiled", recording)

    def check(*overrides):
        lowered.clear()
        config = load_config("configs/vae.py:tiny", [*(v.removeprefix("--config.") for v in VAE), *overrides])
        need = VAERun(config, "unused").need(config)
        assert need.total > 0
        return sorted(lowered)
    assert check("training.steps=4", "training.warmup_steps=4") == ["warmup_step"]
    assert check("training.steps=8", "training.warmup_steps=4") == ["discriminator_step", "generator_step"]
