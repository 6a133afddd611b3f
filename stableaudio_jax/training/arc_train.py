"""``stableaudio-jax train-arc``: ARC post-training (``arc_steps``) of a pre-trained rectified-flow model into a
few-step generator, on pre-encoded latents; resumable; a finished run exports a text-to-audio model whose defaults
are ping-pong sampling, ``training.arc.export_steps`` steps, no CFG."""
from __future__ import annotations

import logging
from typing import Any

import jax
import ml_collections

from stableaudio_jax.parallel.mesh import make_mesh
from stableaudio_jax.training import arc_steps
from stableaudio_jax.training.diffusion_steps import abstract_batch
from stableaudio_jax.training.init_from import check_same_shapes, load_trainable, placed
from stableaudio_jax.training.latent_run import LatentRun
from stableaudio_jax.training.latent_source import model_batch
from stableaudio_jax.training.memory_fit import Need
from stableaudio_jax.training.trainer import train

logger = logging.getLogger(__name__)


class ARCRun(LatentRun):
    """ARC on latents: the generator and the discriminator's trunk start from the ``--init-from`` RF model."""
    command = "train-arc"

    def check(self):
        if not self.config.training.get("init_from"):
            raise ValueError("train-arc post-trains a pre-trained rectified-flow model: give --init-from MODEL")

    def compile(self, mesh):
        self.mesh = mesh
        self.compiled = arc_steps.compiled(self.config, mesh, self.source.text_length, self.source.text_width)

    def need(self, config) -> Need:
        """The per-device memory of ARC's compiled step (generator and discriminator updates)."""
        mesh = make_mesh(config.mesh)
        compiled = arc_steps.compiled(config, mesh, self.source.text_length, self.source.text_width)
        batch = abstract_batch(compiled.run, config.training.batch_size, mesh)
        return Need.of(compiled.step.lower(arc_steps.abstract_with(compiled), model_batch(batch)).compile())

    def init(self, checkpointer):
        compiled, t = self.compiled, self.config.training

        def init():
            model = load_trainable(t.init_from)
            check_same_shapes(model.params, compiled.abstract.params, t.init_from)
            logger.info("ARC: generator and discriminator trunk (%d blocks) from %s", t.arc.disc_blocks, t.init_from)
            fresh = compiled.init(jax.random.key(self.config.seed))
            return compiled.start_from(fresh, placed(model.params, compiled.shardings.params))
        return init

    def abstract_state(self):
        return arc_steps.abstract_with(self.compiled)

    def step(self, step, state, batch):
        return self.compiled.step(state, model_batch(batch))

    def sampling(self):
        """A few-step generator: ping-pong sampling, ``training.arc.export_steps`` steps, no CFG."""
        return dict(sampler="pingpong", steps=int(self.config.training.arc.export_steps), cfg_scale=1.0)


def train_arc(config: ml_collections.ConfigDict, workdir: str, data_dir: str, progress: bool = False,
              max_steps: int | None = None) -> dict[str, Any]:
    """ARC until ``config.training.steps`` (or ``max_steps`` more); returns the last logged metrics."""
    return train(ARCRun, config, workdir, data_dir, progress, max_steps)
