"""LoRA fine-tuning runs (``train --init-from MODEL --config.training.lora.rank=R``): the frozen base, the weights
demos sample with and the trained adapters (``training/export.py`` writes them alone or merged into the base).

The base model's weights are loaded from ``--init-from`` at every start (never checkpointed: a checkpoint holds
the adapters, their optimiser moments and EMA); the run records the base's weights hash and refuses to resume
on other weights. Only the adapters train: timing conditioners and text projection stay as the base has them.
"""
from __future__ import annotations

import logging

import ml_collections

from stableaudio_jax.models import lora
from stableaudio_jax.training.checkpoints import CheckpointError
from stableaudio_jax.training.init_from import check_same_shapes, load_trainable, placed
from stableaudio_jax.training.optim import averaged

logger = logging.getLogger(__name__)


def lora_base(compiled, init_from: str | None, config: ml_collections.ConfigDict, checkpointer) -> dict:
    """The base weights of a LoRA run, placed in the run's shardings; records their hash in ``config``."""
    rank = compiled.run.lora.rank
    if not init_from:
        raise ValueError(f"training.lora.rank={rank} trains adapters on a model's weights: give --init-from MODEL "
                         "(a converted or exported diffusion / text-to-audio model)")
    model = load_trainable(init_from)
    check_same_shapes(model.params, compiled.abstract_base, init_from)
    if checkpointer.latest_step() is not None:
        recorded = checkpointer.saved_config().get("training", {}).get("lora", {}).get("base_sha256")
        if recorded and recorded != model.sha256:
            raise CheckpointError(f"{checkpointer.directory}: the adapters were trained on base weights "
                                  f"{recorded[:12]}... but {init_from} holds {model.sha256[:12]}...; resume with "
                                  "the same --init-from model or use another --workdir")
    config.training.lora.base_sha256 = model.sha256
    logger.info("LoRA rank %d on %s (weights %s...): adapting %s", rank, init_from, model.sha256[:12],
                list(compiled.run.lora.targets))
    return placed(model.params, compiled.base_shardings)


def trained_adapters(run, state) -> dict:
    """The run's adapters (their EMA when the run keeps one) with their scales."""
    trained = averaged(state.ema, state.params[lora.LORA])
    return {lora.LORA: trained, lora.LORA_SCALE: lora.scales_for(trained, run.lora.scale)}


def sampling_params(run, state, base: dict | None) -> dict:
    """The conditioned model's weights to sample with: the EMA (or online) weights, or the base with the trained
    adapters merged in."""
    if getattr(run, "lora", None) is None:  # a full fine-tune, or ARC's generator
        return dict(state.params, denoiser=averaged(state.ema, state.params["denoiser"]))
    return dict(base, denoiser=lora.merge(base["denoiser"], trained_adapters(run, state)))
