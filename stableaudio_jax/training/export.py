"""A run's weights written as stored models (what ``generate``, ``encode`` and ``--init-from`` read): the VAE, the
denoiser (a text-to-audio model with the data's text encoder and VAE, or the diffusion model alone), a LoRA
adapter alone or merged into its base.

On a multi-host run the weights are sharded over every host's devices and no process can read them alone: every
process calls the export, which gathers them (``host_arrays``, a collective), and process 0 writes.
"""
from __future__ import annotations

import logging
import os

import jax
import ml_collections

from stableaudio_jax import paths
from stableaudio_jax.diffusion.samplers import default_sampling
from stableaudio_jax.models import lora
from stableaudio_jax.store import (VAE, TextToAudioModel, diffusion_model, load_diffusion, load_text_to_audio,
                                   read_info, save_diffusion, save_text_to_audio, save_vae, vae_from_config)
from stableaudio_jax.models.sa3_conditioning import SA3Denoiser
from stableaudio_jax.store.adapters import LoraAdapter, base_record, save_lora
from stableaudio_jax.store.format import host_arrays
from stableaudio_jax.store.sa3 import SA3Model, is_sa3, load_sa3, save_sa3
from stableaudio_jax.training.lora_runs import sampling_params, trained_adapters
from stableaudio_jax.training.sources import data_model_paths, load_data_models

logger = logging.getLogger(__name__)


def export_vae_model(config, weights, step: int, workdir: str, out: str) -> str:
    """A VAE run's ``weights`` (the EMA, else the online ones) as a stored VAE."""
    params = host_arrays(weights)
    if jax.process_index() != 0:
        return out
    vae = VAE(vae_from_config(config.model), params, ml_collections.ConfigDict(config.model.to_dict()), out)
    path = save_vae(out, vae, overwrite=True, provenance={"run": paths.absolute(workdir), "step": step,
                                                          "steps": int(config.training.steps)})
    logger.info("exported the VAE (EMA weights, step %d) to %s", step, path)
    return path


def export_model(run, state, config, manifest: dict | None, directory: str, sampling: dict | None = None) -> str:
    """The trained model (EMA denoiser + conditioners) as a text-to-audio model with the data's T5 and VAE, or the
    diffusion model alone when they are unknown; ``sampling``: generation defaults other than the objective's."""
    if run.kind == "sa3":
        return export_sa3(run, state, config, manifest, directory, sampling)
    params = host_arrays(sampling_params(run, state, None))
    if jax.process_index() != 0:
        return directory
    model = diffusion_model(run.config, params, directory)
    provenance = {"run": paths.absolute(os.path.dirname(paths.absolute(directory))), "step": int(state.step),
                  "data_encoder_config_hash": config.training.data.get("encoder_config_hash", "")}
    if not all(data_model_paths(config, manifest)):
        path = save_diffusion(directory, model, overwrite=True, provenance=provenance)
        logger.info("exported the diffusion model to %s (no VAE / text encoder is known for this data, so it is not "
                    "a text-to-audio model; train on `stableaudio-jax encode` output for one)", path)
        return path
    vae, text = load_data_models(config, manifest)
    ratio = int(manifest["downsampling_ratio"])
    audio = {"sample_rate": int(manifest["sample_rate"]), "channels": int(vae.module.audio_channels),
             "sample_size": int(config.training.crop_frames) * ratio}
    sampling = dict(default_sampling(model.objective, float(run.config.get("guidance", {}).get("scale_phi", 0.0))),
                    **(sampling or {}))
    bundle = TextToAudioModel(text, model, vae, ml_collections.ConfigDict({"audio": audio, "sampling": sampling}),
                              directory)
    path = save_text_to_audio(directory, bundle, overwrite=True, provenance=provenance)
    logger.info("exported the trained %s to %s (stableaudio-jax generate --checkpoint %s)", model.model.kind, path,
                path)
    return path


def export_sa3(run, state, config, manifest: dict | None, directory: str, sampling: dict | None = None) -> str:
    """An SA3 run's EMA weights as a Stable Audio 3 bundle (``store.sa3``) with the data's SAME and T5Gemma; the
    generation settings are the config's, at the data's sample rate, capped at the frames the run trained on.
    ``sampling`` (ARC's few-step defaults) marks a post-trained model: objective ``rf_denoiser``, as the published
    post-trained SA3 models are labelled."""
    params = host_arrays(sampling_params(run, state, None))
    if jax.process_index() != 0:
        return directory
    if not all(data_model_paths(config, manifest)):  # synthetic data (benchmarks): the checkpoints are the result
        logger.warning("not exported to %s: an SA3 model is stored with the SAME and T5Gemma that encoded its data, "
                       "and this run's data names none (train on `stableaudio-jax encode` output)", directory)
        return directory
    vae, text = load_data_models(config, manifest)
    model_config = ml_collections.ConfigDict({k: run.config[k].to_dict() for k in ("model", "conditioning",
                                                                                 "diffusion", "generation")})
    model_config.conditioning.max_length = int(manifest["text_length"])
    if sampling:
        model_config.generation.update(sampling)
        model_config.diffusion.objective = "rf_denoiser"
    model_config.generation.update(sample_rate=int(manifest["sample_rate"]), max_frames=min(
        int(model_config.generation.max_frames), int(config.training.crop_frames)))
    bundle = SA3Model(text, SA3Denoiser(run.model.denoiser, run.model.conditioner),
                      run.model.denoiser_params(params), vae, model_config, directory)
    provenance = {"run": paths.absolute(os.path.dirname(paths.absolute(directory))), "step": int(state.step),
                  "data_encoder_config_hash": config.training.data.get("encoder_config_hash", "")}
    path = save_sa3(directory, bundle, overwrite=True, provenance=provenance)
    logger.info("exported the trained SA3 model to %s (stableaudio-jax generate --checkpoint %s)", path, path)
    return path


def export_adapter(run, state, config, directory: str) -> str:
    """A LoRA run's adapter alone as a stored ``lora`` model (what ``generate --lora`` reads)."""
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
    """The base model with a LoRA run's adapter merged in, stored as the base was (text-to-audio bundle or
    diffusion)."""
    adapters = host_arrays(trained_adapters(run, state))
    if jax.process_index() != 0:
        return directory
    source = config.training.init_from
    provenance = {"base": paths.absolute(source), "step": int(state.step),
                  "lora": {"rank": run.lora.rank, "alpha": run.lora.alpha}}
    if read_info(source).kind == "text-to-audio" and is_sa3(source):
        bundle = load_sa3(source)
        dit = lora.merge({"params": bundle.params["params"]["dit"]}, adapters)["params"]
        bundle.params, bundle.source = {"params": dict(bundle.params["params"], dit=dit)}, directory
        return save_sa3(directory, bundle, overwrite=True, provenance=provenance)
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
