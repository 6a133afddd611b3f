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

from stableaudio_jax import paths
from stableaudio_jax.data.audio_folder import CheckpointableIterator, SilentCropCounter, audio_crop_dataset
from stableaudio_jax.data.audio_source import scan_audio_source
from stableaudio_jax.parallel.distributed import initialize
from stableaudio_jax.parallel.mesh import make_mesh
from stableaudio_jax.store import VAE, save_vae, vae_from_config
from stableaudio_jax.store.builders import VAE_TYPES
from stableaudio_jax.store.format import host_arrays
from stableaudio_jax.training import vae_steps
from stableaudio_jax.training.checkpoints import CheckpointError, EXPORT_DIR, TrainCheckpointer
from stableaudio_jax.training.init_from import start_vae_from_model
from stableaudio_jax.training.loop import abstract_with_shardings, check_global_batch, resume_or_start, run_loop
from stableaudio_jax.training.memory_fit import Need, check_fits
from stableaudio_jax.training.metrics import MetricsWriter
from stableaudio_jax.training.optim import averaged

logger = logging.getLogger(__name__)


def _data(config, data_dir: str, per_host_batch: int):
    scan = scan_audio_source(data_dir)
    logger.info("training data: %s", scan.report())
    t = config.training
    d = t.data
    dataset = audio_crop_dataset(scan, per_host_batch, config.model.sample_rate, config.model.audio_channels,
                                 t.crop_samples, seed=config.seed, process_index=jax.process_index(),
                                 process_count=jax.process_count(), silence_db=d.silence_db,
                                 max_redraws=d.max_redraws, phase_flip=d.phase_flip)
    return scan, SilentCropCounter(CheckpointableIterator(dataset), d.max_redraws)


def train_vae(config: ml_collections.ConfigDict, workdir: str, data_dir: str, progress: bool = False,
              max_steps: int | None = None) -> dict[str, Any]:
    """Trains until ``config.training.steps`` (or ``max_steps`` more steps); returns the last logged metrics."""
    initialize(config.get("distributed"))
    t = config.training
    mesh = make_mesh(config.mesh)
    check_global_batch(t.batch_size, mesh)
    per_host = t.batch_size // jax.process_count()
    scan, data = _data(config, data_dir, per_host)
    compiled = vae_steps.compiled(config, mesh)
    if t.get("check_memory", True):
        check_fits(config, _need, "train-vae")
    checkpointer = TrainCheckpointer(workdir, keep=t.keep_checkpoints)
    init = (start_vae_from_model(compiled, t.init_from, config.seed) if t.get("init_from")
            else lambda: compiled.init(jax.random.key(config.seed)))
    state, data_state, _ = resume_or_start(
        checkpointer, abstract_with_shardings(compiled.abstract, compiled.shardings), init, config, workdir)
    data.restore(data_state)
    writer = MetricsWriter(workdir)
    start = int(state.step)
    end = t.steps if max_steps is None else min(t.steps, start + max_steps)
    if start == 0:
        writer.write(0, {"data/files": len(scan.files), "data/skipped_files": len(scan.skipped)})
    try:
        def step_fn(step, s, batch):
            s, metrics = compiled.step_for(step, int(t.get("warmup_steps", 0)))(s, batch["audio"])
            return s, dict(metrics, silent_crops=data.total)  # crops used after max_redraws, this process

        state, last = run_loop(state, step_fn, data, vae_steps.batch_sharding(mesh), start=start, end=end,
                               checkpointer=checkpointer, writer=writer, config=config, desc="train-vae",
                               progress=progress,
                               audio_seconds_per_step=t.batch_size * t.crop_samples / config.model.sample_rate)
        checkpointer.wait()
        if int(state.step) == t.steps:
            _export(config, averaged(state.ema_params, state.gen_params), int(state.step), workdir,
                    os.path.join(workdir, EXPORT_DIR))
    finally:
        checkpointer.close()
        writer.close()
    return last


def _need(config) -> Need:
    """The larger per-device memory of the generator's and the discriminator's compiled steps under ``config``."""
    mesh = make_mesh(config.mesh)
    compiled = vae_steps.compiled(config, mesh)
    t = config.training
    state = abstract_with_shardings(compiled.abstract, compiled.shardings)
    audio = jax.ShapeDtypeStruct((t.batch_size, t.crop_samples, config.model.audio_channels), jax.numpy.float32,
                                 sharding=vae_steps.batch_sharding(mesh))
    needs = [Need.of(step.lower(state, audio).compile())
             for step in (compiled.generator_step, compiled.discriminator_step)]
    return max(needs, key=lambda n: n.total)


def _export(config, weights, step: int, workdir: str, out: str) -> str:
    """Every process gathers the weights (the EMA, else the online ones; sharded over hosts); process 0 writes."""
    params = host_arrays(weights)
    if jax.process_index() != 0:
        return out
    vae = VAE(vae_from_config(config.model), params, ml_collections.ConfigDict(config.model.to_dict()), out)
    path = save_vae(out, vae, overwrite=True, provenance={"run": paths.absolute(workdir), "step": step,
                                                          "steps": int(config.training.steps)})
    logger.info("exported the VAE (EMA weights, step %d) to %s", step, path)
    return path


def _restore(workdir: str, step: int | None = None):
    """(config, train state) of a train-vae run's checkpoint ``step`` (default: the latest), on the host."""
    workdir = paths.absolute(workdir)
    config = ml_collections.ConfigDict(paths.read_json(paths.join(workdir, "config.json")))
    if config.get("model", {}).get("type") not in VAE_TYPES:
        raise CheckpointError(f"{workdir}/config.json: model.type {config.get('model', {}).get('type')!r}; "
                              f"expected one of {sorted(VAE_TYPES)} (a train-vae workdir)")
    run = vae_steps.build(config)
    abstract = vae_steps.abstract_state(run, config.training.crop_samples, config.model.audio_channels)
    checkpointer = TrainCheckpointer(workdir, async_save=False)
    try:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{workdir}/checkpoints: no checkpoint yet; train the VAE first")
        state, _, _ = checkpointer.restore(abstract, step)
    finally:
        checkpointer.close()
    return config, state


def load_vae_from_workdir(workdir: str, dtype=None, step: int | None = None) -> tuple[VAE, int, int]:
    """(the EMA VAE of checkpoint ``step`` (default: the latest), that step, the run's total steps)."""
    config, state = _restore(workdir, step)
    module = vae_from_config(config.model, dtype=dtype or "float32")
    weights = jax.device_get(averaged(state.ema_params, state.gen_params))
    vae = VAE(module, weights, ml_collections.ConfigDict(config.model.to_dict()), paths.absolute(workdir))
    return vae, int(state.step), int(config.training.steps)


def export_vae(workdir: str, out: str | None = None, step: int | None = None) -> str:
    """Writes checkpoint ``step`` (default: the latest) of a train-vae run as a stored VAE (``<workdir>/model``)."""
    config, state = _restore(workdir, step)
    return _export(config, averaged(state.ema_params, state.gen_params), int(state.step), workdir,
                   out or os.path.join(workdir, EXPORT_DIR))
