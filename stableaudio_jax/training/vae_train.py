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
import numpy as np

from stableaudio_jax.data.audio_folder import CheckpointableIterator, audio_crop_dataset, scan_audio_folder
from stableaudio_jax.parallel.distributed import global_batch, initialize
from stableaudio_jax.parallel.mesh import make_mesh
from stableaudio_jax.training import vae_steps
from stableaudio_jax.training.checkpoints import TrainCheckpointer
from stableaudio_jax.training.loop import FiniteGuard, StepTimer, StopSignal, abstract_with_shardings, resume_or_start
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
    batch_sharding = vae_steps.batch_sharding(mesh)
    start = int(state.step)
    end = t.steps if max_steps is None else min(t.steps, start + max_steps)
    if start == 0:
        writer.write(0, {"data/files": len(scan.files), "data/skipped_files": len(scan.skipped)})
    guard, timer, last = FiniteGuard(), StepTimer(), {}
    bar = _progress(progress, start, end)
    audio_seconds = t.batch_size * t.crop_samples / config.model.sample_rate
    try:
        with StopSignal() as stop:
            for step in range(start, end):
                audio = global_batch(next(data)["audio"], batch_sharding)
                state, metrics = (d_step if step % 2 else g_step)(state, audio)
                guard.update(metrics.pop("finite"), step)
                timer.tick()
                last.update({f"train/{k}": v for k, v in metrics.items()})
                if bar is not None:
                    bar.update(1)
                done = step + 1
                if done % t.log_every == 0 or done == end:
                    last = _log(writer, guard, timer, last, done, audio_seconds)
                # one process: poll the flag every step; several: agree at log steps (a collective, not per step)
                stopping = stop.requested if jax.process_count() == 1 else (
                    done % t.log_every == 0 and stop.any_process())
                if done % t.checkpoint_every == 0 or done == end or stopping:
                    guard.check(done, last)
                    checkpointer.save(done, state, data.state(), config)
                    if stopping and done < end:
                        logger.warning("stopped at step %d; re-run the same command to resume", done)
                        break
                    if checkpointer.reached_preemption(done):
                        logger.warning("preemption at step %d: checkpoint saved", done)
                        break
    finally:
        if bar is not None:
            bar.close()
        checkpointer.close()
        writer.close()
    return {k: float(np.asarray(v)) for k, v in last.items()}


def _log(writer, guard, timer, last, step, audio_seconds):
    guard.check(step, last)
    seconds = timer.lap()
    values = {k: float(np.asarray(jax.device_get(v))) for k, v in last.items()}
    values.update({"perf/step_time_s": seconds, "perf/audio_seconds_per_s": audio_seconds / seconds})
    writer.write(step, values)
    return values


def _progress(enabled: bool, start: int, end: int):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=end, initial=start, desc="train-vae", unit="step")
