"""``train_diffusion(config, workdir, data_dir)``: the denoiser (DiT or U-Net) trained on pre-encoded latents.

Data: ``data_dir`` is a ``stableaudio-jax encode`` output (TFRecord shards + manifest), read per host, or
``"synthetic"`` for correctly shaped random latents (benchmarks). The manifest must fit the model: latent channels
= the denoiser's, (DiT configs) the VAE that encoded the latents = ``config.vae``, and text features whose width
sets the conditioning widths (``store.resolve_conditioning``: a text projection when it differs from
``conditioning.cond_dim``). Its encoder hash (configs *and* weights of the VAE and text encoder) is stored in the
run's config, so resuming on re-encoded data raises.

Resumable by re-running with the same workdir; metrics to TensorBoard + ``metrics.jsonl``; non-finite loss stops
without saving; demos (wav + PNG) every ``training.demo.every`` steps. A finished run exports ``<workdir>/model``:
a text-to-audio model (EMA denoiser + its conditioners + the data's T5 and VAE) that ``stableaudio-jax generate
--checkpoint`` runs, or, when the data names no VAE / text encoder (synthetic data), the diffusion model alone.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections

from stableaudio_jax import paths
from stableaudio_jax.parallel.mesh import make_mesh
from stableaudio_jax.store.format import host_arrays
from stableaudio_jax.training import diffusion_steps
from stableaudio_jax.training.checkpoints import EXPORT_DIR
from stableaudio_jax.training.demos import DemoHook, DemoWriter
from stableaudio_jax.training.export import export_adapter, export_merged, export_model
from stableaudio_jax.training.flops import train_step_flops
from stableaudio_jax.training.init_from import start_diffusion_from_model
from stableaudio_jax.training.latent_run import LatentRun
from stableaudio_jax.training.latent_source import model_batch
from stableaudio_jax.training.loop import abstract_with_shardings
from stableaudio_jax.training.lora_runs import lora_base, sampling_params
from stableaudio_jax.training.memory_fit import Need
from stableaudio_jax.training.sources import data_model_paths, load_data_models
from stableaudio_jax.training.trainer import train
from stableaudio_jax.training.workdirs import restore_diffusion_run

# export_model: its old home (train-arc and users import it from here)
__all__ = ["DiffusionRun", "export_from_workdir", "export_model", "render_demos", "train_diffusion"]


class DiffusionRun(LatentRun):
    """A denoiser (DiT or U-Net; v, eps or rectified flow) trained on latents; with ``training.lora.rank`` > 0 the
    adapters alone train on the frozen ``--init-from`` base (``self.base``: the step's argument, not state)."""
    command = "train"

    def compile(self, mesh):
        self.mesh = mesh
        self.compiled = diffusion_steps.compiled(self.config, mesh, self.source.text_length, self.source.text_width)
        self.base = None

    def need(self, config) -> Need:
        compiled = diffusion_steps.compiled(config, make_mesh(config.mesh), self.source.text_length,
                                            self.source.text_width)
        return Need.of(compiled.lower(config.training.batch_size).compile())

    def init(self, checkpointer):
        compiled, t = self.compiled, self.config.training
        fresh = lambda: compiled.init(jax.random.key(self.config.seed))  # noqa: E731
        if compiled.run.lora is not None:  # the base is loaded (and its hash checked) at every start, resumes too
            self.base = lora_base(compiled, t.init_from, self.config, checkpointer)
            return fresh  # fresh adapters (B = 0) on it
        if t.get("init_from"):
            return start_diffusion_from_model(compiled, t.init_from)
        return fresh

    def abstract_state(self):
        return abstract_with_shardings(self.compiled.abstract, self.compiled.shardings)

    def step(self, step, state, batch):
        frozen = () if self.base is None else (self.base,)
        return self.compiled.step(state, model_batch(batch), *frozen)

    def flops_per_step(self):
        return train_step_flops(self.compiled, self.config.training.batch_size)

    def hooks(self):
        """Demos every ``training.demo.every`` steps: every process runs the hook (it gathers the weights); only
        process 0 loads the VAE and text encoder and renders."""
        config, run = self.config, self.compiled.run
        if not config.training.demo.every:
            return []
        if not all(data_model_paths(config, self.manifest)):
            raise ValueError("training.demo.every is set but no VAE / text encoder is known: set training.demo.vae "
                             "and training.demo.text_encoder (or train on `stableaudio-jax encode` output, which "
                             "records them)")
        writer = None
        if jax.process_index() == 0:
            writer = DemoWriter(run, *load_data_models(config, self.manifest), config, self.workdir)
        params = lambda state: sampling_params(run, state, self.base)  # noqa: E731 - the EMA, or base + adapters
        return [(int(config.training.demo.every), DemoHook(writer, params))]

    def export(self, state, out):
        if self.base is not None:
            export_adapter(self.compiled.run, state, self.config, out)
        else:
            super().export(state, out)


def train_diffusion(config: ml_collections.ConfigDict, workdir: str, data_dir: str, progress: bool = False,
                    max_steps: int | None = None) -> dict[str, Any]:
    """Trains until ``config.training.steps`` (or ``max_steps`` more steps); returns the last logged metrics."""
    return train(DiffusionRun, config, workdir, data_dir, progress, max_steps)


def export_from_workdir(workdir: str, out: str | None = None, step: int | None = None, merged: bool = False) -> str:
    """Exports checkpoint ``step`` (default: the latest) of a ``train`` run, finished or not, as
    :func:`export_model` does at the end of a run (default: ``<workdir>/model``); a LoRA run's adapter alone, or
    with ``merged`` the base model with the adapter merged in."""
    workdir = paths.absolute(workdir)
    config, run, state, manifest = restore_diffusion_run(workdir, step)
    out = out or os.path.join(workdir, EXPORT_DIR)
    if merged and run.lora is None:
        raise ValueError(f"{workdir}: --merged exports a LoRA run (training.lora.rank > 0); this run trains every "
                         "weight, export it without --merged")
    if run.lora is not None:
        return (export_merged if merged else export_adapter)(run, state, config, out)
    return export_model(run, state, config, manifest, out)


def render_demos(workdir: str, step: int | None = None, out: str | None = None) -> list[str]:
    """The demos of checkpoint ``step`` (default: the latest) of a full (not LoRA) ``train`` run, rendered in this
    one process as the run renders them (into ``<out or workdir>/demos/step_<N>``): a run's demos can be
    re-made, or made for a checkpoint the run did not render, on one machine."""
    workdir = paths.absolute(workdir)
    config, run, state, manifest = restore_diffusion_run(workdir, step)
    if run.lora is not None:
        raise ValueError(f"{workdir}: a LoRA run; render demos of its merged export (`stableaudio-jax export "
                         "--merged`) with `stableaudio-jax generate` instead")
    writer = DemoWriter(run, *load_data_models(config, manifest), config, out or workdir)
    return writer(int(state.step), host_arrays(sampling_params(run, state, None)))
