"""``train_vae(config, workdir, data_dir)``: the VAE training loop (GAN + spectral losses) on a device mesh.

``data_dir`` is an ingested dataset (``stableaudio-jax ingest``: its skips, captions and splits) or a folder of
audio files.

Resumable by re-running with the same workdir: the latest checkpoint (state, data position, config) is restored
onto the current mesh. Metrics go to TensorBoard and ``metrics.jsonl`` from process 0; a non-finite loss stops the
run without saving; SIGTERM/SIGINT (and TPU preemption notices) save a checkpoint and stop. A finished run exports
its EMA weights as a stored VAE in ``<workdir>/model`` (``encode --vae`` takes the workdir or that directory);
:func:`export_vae` exports any checkpoint of a run, finished or not.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import ml_collections

from stableaudio_jax.data.audio_folder import CheckpointableIterator, SilentCropCounter, audio_crop_dataset
from stableaudio_jax.data.audio_source import scan_audio_source
from stableaudio_jax.parallel.mesh import make_mesh
from stableaudio_jax.training import vae_steps
from stableaudio_jax.training.checkpoints import EXPORT_DIR
from stableaudio_jax.training.export import export_vae_model
from stableaudio_jax.training.init_from import start_vae_from_model
from stableaudio_jax.training.loop import abstract_with_shardings
from stableaudio_jax.training.memory_fit import Need
from stableaudio_jax.training.optim import averaged
from stableaudio_jax.training.trainer import Run, train
from stableaudio_jax.training.workdirs import load_vae_from_workdir, restore_vae_run

__all__ = ["VAERun", "export_vae", "load_vae_from_workdir", "train_vae"]  # load_vae_from_workdir: its old home
logger = logging.getLogger(__name__)


class VAERun(Run):
    """The VAE (GAN + spectral losses) on crops of an audio dataset."""
    command = "train-vae"

    def open_data(self, data_dir, checkpointer):
        self.scan = scan_audio_source(data_dir)
        logger.info("training data: %s", self.scan.report())
        config, t = self.config, self.config.training
        d = t.data
        dataset = audio_crop_dataset(self.scan, t.batch_size // jax.process_count(), config.model.sample_rate,
                                     config.model.audio_channels, t.crop_samples, seed=config.seed,
                                     process_index=jax.process_index(), process_count=jax.process_count(),
                                     silence_db=d.silence_db, max_redraws=d.max_redraws, phase_flip=d.phase_flip)
        self.data = SilentCropCounter(CheckpointableIterator(dataset), d.max_redraws)
        return self.data

    def compile(self, mesh):
        self.mesh, self.compiled = mesh, vae_steps.compiled(self.config, mesh)

    def need(self, config) -> Need:
        """The largest per-device memory of the compiled steps this run takes: the generator's and the
        discriminator's, or only the warm-up step's when every step is a warm-up step (``training.warmup_steps``
        >= ``training.steps``, as in the CPU quickstart): the other two would be compiled and never run."""
        mesh = make_mesh(config.mesh)
        compiled = vae_steps.compiled(config, mesh)
        t = config.training
        state = abstract_with_shardings(compiled.abstract, compiled.shardings)
        audio = jax.ShapeDtypeStruct((t.batch_size, t.crop_samples, config.model.audio_channels), jax.numpy.float32,
                                     sharding=vae_steps.batch_sharding(mesh))
        steps = ((compiled.warmup_step,) if int(t.get("warmup_steps", 0)) >= int(t.steps)
                 else (compiled.generator_step, compiled.discriminator_step))
        needs = [Need.of(step.lower(state, audio).compile()) for step in steps]
        return max(needs, key=lambda n: n.total)

    def init(self, checkpointer):
        t, compiled = self.config.training, self.compiled
        if t.get("init_from"):
            return start_vae_from_model(compiled, t.init_from, self.config.seed)
        return lambda: compiled.init(jax.random.key(self.config.seed))

    def abstract_state(self):
        return abstract_with_shardings(self.compiled.abstract, self.compiled.shardings)

    def step(self, step, state, batch):
        state, metrics = self.compiled.step_for(step, int(self.config.training.get("warmup_steps", 0)))(
            state, batch["audio"])
        return state, dict(metrics, silent_crops=self.data.total)  # crops used after max_redraws, this process

    def batch_sharding(self):
        return vae_steps.batch_sharding(self.mesh)

    @property
    def audio_seconds_per_step(self) -> float:
        t = self.config.training
        return t.batch_size * t.crop_samples / self.config.model.sample_rate

    def first_metrics(self) -> dict:
        return {"data/files": len(self.scan.files), "data/skipped_files": len(self.scan.skipped)}

    def export(self, state, out):
        export_vae_model(self.config, averaged(state.ema_params, state.gen_params), int(state.step), self.workdir,
                         out)


def train_vae(config: ml_collections.ConfigDict, workdir: str, data_dir: str, progress: bool = False,
              max_steps: int | None = None) -> dict[str, Any]:
    """Trains until ``config.training.steps`` (or ``max_steps`` more steps); returns the last logged metrics."""
    return train(VAERun, config, workdir, data_dir, progress, max_steps)


def export_vae(workdir: str, out: str | None = None, step: int | None = None) -> str:
    """Writes checkpoint ``step`` (default: the latest) of a train-vae run as a stored VAE (``<workdir>/model``)."""
    config, state = restore_vae_run(workdir, step)
    return export_vae_model(config, averaged(state.ema_params, state.gen_params), int(state.step), workdir,
                            out or os.path.join(workdir, EXPORT_DIR))
