"""LoRA fine-tuning runs (``train --init-from MODEL --config.training.lora.rank=R``): the frozen base, the weights
demos sample with, and the exports (the adapter alone, or merged into the base).

The base model's weights are loaded from ``--init-from`` at every start (never checkpointed: a checkpoint holds
the adapters, their optimiser moments and EMA); the run records the base's weights hash and refuses to resume
on other weights. Only the adapters train: timing conditioners and text projection stay as the base has them.
"""
from __future__ import annotations

import logging
import os

import jax
import ml_collections

from stableaudio_jax import paths
from stableaudio_jax.models import lora
from stableaudio_jax.store import load_diffusion, load_text_to_audio, read_info, save_diffusion, save_text_to_audio
from stableaudio_jax.store.adapters import LoraAdapter, base_record, save_lora
from stableaudio_jax.store.format import host_arrays
from stableaudio_jax.training.checkpoints import CheckpointError
from stableaudio_jax.training.init_from import check_same_shapes, placed
from stableaudio_jax.training.optim import averaged

logger = logging.getLogger(__name__)


def lora_base(compiled, init_from: str | None, config: ml_collections.ConfigDict, checkpointer) -> dict:
    """The base weights of a LoRA run, placed in the run's shardings; records their hash in ``config``."""
    rank = compiled.run.lora.rank
    if not init_from:
        raise ValueError(f"training.lora.rank={rank} trains adapters on a model's weights: give --init-from MODEL "
                         "(a converted or exported diffusion / text-to-audio model)")
    model = load_diffusion(init_from)
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


def export_adapter(run, state, config, directory: str) -> str:
    """The adapter alone as a stored ``lora`` model (what ``generate --lora`` reads)."""
    adapters = host_arrays(trained_adapters(run, state))
    if jax.process_index() != 0:
        return directory
    t = config.training
    adapter = LoraAdapter(run.lora, adapters, base_record(paths.absolute(t.init_from), t.lora.get("base_sha256", ""),
                                                          run.config.model.to_dict()))
    provenance = {"run": paths.absolute(os.path.dirname(paths.absolute(directory))), "step": int(state.step)}
    save_lora(directory, adapter, overwrite=True, provenance=provenance)
    logger.info("exported the LoRA adapter (%d parameters) to %s (stableaudio-jax generate --checkpoint %s --lora %s)",
                adapter.parameters, directory, t.init_from, directory)
    return directory


def export_merged(run, state, config, directory: str) -> str:
    """The base model with the adapter merged in, stored as the base was (text-to-audio bundle or diffusion)."""
    adapters = host_arrays(trained_adapters(run, state))
    if jax.process_index() != 0:
        return directory
    source = config.training.init_from
    provenance = {"base": paths.absolute(source), "step": int(state.step),
                  "lora": {"rank": run.lora.rank, "alpha": run.lora.alpha}}
    if read_info(source).kind == "text-to-audio":
        bundle = load_text_to_audio(source)
        diffusion = bundle.diffusion
        merged = type(diffusion)(diffusion.model, dict(diffusion.params,
                                                       denoiser=lora.merge(diffusion.params["denoiser"], adapters)),
                                 diffusion.config, directory)
        bundle = type(bundle)(bundle.text, merged, bundle.vae, bundle.config, directory)
        return save_text_to_audio(directory, bundle, overwrite=True, provenance=provenance)
    model = load_diffusion(source)
    merged = type(model)(model.model, dict(model.params, denoiser=lora.merge(model.params["denoiser"], adapters)),
                         model.config, directory)
    return save_diffusion(directory, merged, overwrite=True, provenance=provenance)
