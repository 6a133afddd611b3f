"""``train_vae(config, workdir, data_dir)``: the VAE training loop (GAN + spectral losses) on a device mesh.

Resumable by re-running with the same workdir: the latest checkpoint (state, data position, config) is restored
onto the current mesh. Metrics go to TensorBoard and ``metrics.jsonl`` from process 0; a non-finite loss stops the
run without saving; SIGTERM/SIGINT (and TPU preemption notices) save a checkpoint and stop.
"""
from __future__ import annotations

import logging
from typing import Any

import jax
import ml_collections

from stableaudio_jax.data.audio_folder import CheckpointableIterator, audio_crop_dataset, scan_audio_folder
from stableaudio_jax.parallel.distributed import initialize
from stableaudio_jax.parallel.mesh import make_mesh
from stableaudio_jax.training import vae_steps
from stableaudio_jax.training.checkpoints import TrainCheckpointer
from stableaudio_jax.training.loop import abstract_with_shardings, resume_or_start, run_loop
from stableaudio_jax.training.metrics import MetricsWriter

logger = logging.getLogger(__name__)


def _data(config, data_dir: str, per_host_batch: int):
    scan = scan_audio_folder(data_dir)
    logger.info("training data: %s", scan.report())
    t = config.training
    d = t.data
    dataset = audio_crop_dataset(scan, per_host_batch, config.model.sample_rate, config.model.audio_channels,
                                 t.crop_samples, seed=config.seed, process_index=jax.process_index(),
                                 process_count=jax.process_count(), silence_db=d.silence_db,
                                 max_redraws=d.max_redraws, phase_flip=d.phase_flip)
    return scan, CheckpointableIterator(dataset)


def train_vae(config: ml_collections.ConfigDict, workdir: str, data_dir: str, progress: bool = False,
              max_steps: int | None = None) -> dict[str, Any]:
    """Trains until ``config.training.steps`` (or ``max_steps`` more steps); returns the last logged metrics."""
    initialize(config.get("distributed"))
    t = config.training
    mesh = make_mesh(config.mesh)
    per_host = t.batch_size // jax.process_count()
    if t.batch_size % jax.process_count():
        raise ValueError(f"training.batch_size {t.batch_size} is not divisible by {jax.process_count()} processes")
    scan, data = _data(config, data_dir, per_host)
    compiled = vae_steps.compiled(config, mesh)
    checkpointer = TrainCheckpointer(workdir, keep=t.keep_checkpoints)
    state, data_state, _ = resume_or_start(
        checkpointer, abstract_with_shardings(compiled.abstract, compiled.shardings),
        lambda: compiled.init(jax.random.key(config.seed)), config, workdir)
    data.restore(data_state)
    g_step, d_step = compiled.generator_step, compiled.discriminator_step
    writer = MetricsWriter(workdir)
    start = int(state.step)
    end = t.steps if max_steps is None else min(t.steps, start + max_steps)
    if start == 0:
        writer.write(0, {"data/files": len(scan.files), "data/skipped_files": len(scan.skipped)})
    try:
        _, last = run_loop(state, lambda step, s, batch: (d_step if step % 2 else g_step)(s, batch["audio"]), data,
                           vae_steps.batch_sharding(mesh), start=start, end=end, checkpointer=checkpointer,
                           writer=writer, config=config, desc="train-vae", progress=progress,
                           audio_seconds_per_step=t.batch_size * t.crop_samples / config.model.sample_rate)
    finally:
        checkpointer.close()
        writer.close()
    return last
