"""``stableaudio-jax train-arc``: ARC post-training (``arc_steps``) of a pre-trained rectified-flow model into a
few-step generator, on pre-encoded latents; resumable; a finished run exports a text-to-audio model whose defaults
are ping-pong sampling, ``training.arc.export_steps`` steps, no CFG."""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import ml_collections

from stableaudio_jax.parallel.distributed import initialize
from stableaudio_jax.parallel.mesh import make_mesh
from stableaudio_jax.store import load_diffusion
from stableaudio_jax.training import arc_steps
from stableaudio_jax.training.checkpoints import EXPORT_DIR, TrainCheckpointer
from stableaudio_jax.training.diffusion_steps import abstract_batch, batch_sharding
from stableaudio_jax.training.diffusion_train import export_model, record_data
from stableaudio_jax.training.init_from import check_data_text, check_same_shapes, placed
from stableaudio_jax.training.latent_source import LatentSource, model_batch
from stableaudio_jax.training.loop import check_global_batch, resume_or_start, run_loop
from stableaudio_jax.training.memory_fit import Need, check_fits
from stableaudio_jax.training.metrics import MetricsWriter

logger = logging.getLogger(__name__)


def train_arc(config: ml_collections.ConfigDict, workdir: str, data_dir: str, progress: bool = False,
              max_steps: int | None = None) -> dict[str, Any]:
    """ARC until ``config.training.steps`` (or ``max_steps`` more); returns the last logged metrics."""
    initialize(config.get("distributed"))
    config = ml_collections.ConfigDict(config.to_dict())
    t = config.training
    if not t.get("init_from"):
        raise ValueError("train-arc post-trains a pre-trained rectified-flow model: give --init-from MODEL")
    mesh = make_mesh(config.mesh)
    check_global_batch(t.batch_size, mesh)
    checkpointer = TrainCheckpointer(workdir, keep=t.keep_checkpoints)
    source = LatentSource.open(config, data_dir, checkpointer)  # a resume checks the data against its checkpoint
    manifest, data = source.manifest, source.data
    if manifest is not None:
        check_data_text(config, manifest, data_dir)
    record_data(workdir, data_dir, manifest, config)
    text_length, text_width = source.text_length, source.text_width
    compiled = arc_steps.compiled(config, mesh, text_length, text_width)
    if t.get("check_memory", True):
        check_fits(config, lambda c: _need(c, text_length, text_width), "train-arc")

    def init():
        model = load_diffusion(t.init_from)
        check_same_shapes(model.params, compiled.abstract.params, t.init_from)
        logger.info("ARC: generator and discriminator trunk (%d blocks) from %s", t.arc.disc_blocks, t.init_from)
        fresh = compiled.init(jax.random.key(config.seed))
        return compiled.start_from(fresh, placed(model.params, compiled.shardings.params))

    state, data_state, _ = resume_or_start(checkpointer, arc_steps.abstract_with(compiled), init, config, workdir)
    data.restore(data_state)
    writer = MetricsWriter(workdir)
    start = int(state.step)
    end = t.steps if max_steps is None else min(t.steps, start + max_steps)
    try:
        state, last = run_loop(state, lambda step, s, batch: compiled.step(s, model_batch(batch)), data,
                               batch_sharding(mesh), start=start, end=end, checkpointer=checkpointer, writer=writer,
                               config=config, desc="arc", progress=progress,
                               audio_seconds_per_step=t.batch_size * t.crop_frames * source.seconds_per_frame)
        checkpointer.wait()
        if int(state.step) == t.steps:
            sampling = dict(sampler="pingpong", steps=int(t.arc.export_steps), cfg_scale=1.0)
            export_model(compiled.run, state, config, manifest, os.path.join(workdir, EXPORT_DIR), sampling)
    finally:
        checkpointer.close()
        writer.close()
    return last


def _need(config, text_length: int, text_width: int) -> Need:
    """The per-device memory of ARC's compiled step (generator and discriminator updates) under ``config``."""
    mesh = make_mesh(config.mesh)
    compiled = arc_steps.compiled(config, mesh, text_length, text_width)
    batch = abstract_batch(compiled.run, config.training.batch_size, mesh)
    return Need.of(compiled.step.lower(arc_steps.abstract_with(compiled), model_batch(batch)).compile())
