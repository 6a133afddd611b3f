"""``train --init-from MODEL`` / ``train-vae --init-from MODEL``: a run that starts from a stored model's weights
(one exported by a run, or converted from stable-audio-tools / diffusers) instead of a random initialisation.

The run takes the model's own config sections (diffusion: ``model``, ``conditioning``, ``diffusion`` and
``guidance``, plus the bundle's VAE config as ``vae``; VAE: ``model``); overrides given on the command line for
those sections are applied on top (``--config.diffusion.objective=rectified_flow`` turns a v-model into a rectified-flow
fine-tune; ``--config.model.remat=full`` saves memory). Overrides that change parameter shapes are refused with
the list of mismatched weights. The weights are loaded exactly; the optimiser state is fresh and the EMA starts
from the loaded weights. The run records ``training.init_from``; re-running the command resumes from the run's
own checkpoints as usual.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from stableaudio_jax import paths
from stableaudio_jax.config_loader import OVERRIDE_PREFIX, apply_overrides
from stableaudio_jax.store import load_diffusion, load_vae, read_info
from stableaudio_jax.store.format import flatten, weights_sha256

logger = logging.getLogger(__name__)
DIFFUSION_SECTIONS = ("model", "conditioning", "diffusion", "guidance", "vae")
VAE_SECTIONS = ("model",)


def _section_overrides(overrides: Sequence[str], sections: Sequence[str]) -> list[str]:
    def section(item: str) -> str:
        return (item[len(OVERRIDE_PREFIX):] if item.startswith(OVERRIDE_PREFIX) else item).split(".", 1)[0]
    return [o for o in overrides if section(o) in sections]


def diffusion_config_from_model(config: ml_collections.ConfigDict, path: str,
                                overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The run's config with the stored diffusion model's sections (and a bundle's VAE config), the command's
    overrides of those sections re-applied on top."""
    info = read_info(path, ("diffusion", "text-to-audio"))
    stored = (read_info(info.path(info.components["diffusion"]), "diffusion") if info.kind == "text-to-audio"
              else info).config
    run = ml_collections.ConfigDict(config.to_dict())
    for key in DIFFUSION_SECTIONS[:-1]:
        if key in stored:
            run[key] = stored[key].to_dict()
        elif key in run and key == "guidance":
            del run[key]
    if info.kind == "text-to-audio":
        run.vae = read_info(info.path(info.components["vae"]), "vae").config.to_dict()
    if info.config.get("family") == "sa3":  # a Stable Audio 3 bundle keeps its length cap and sampler defaults
        run.generation = info.config.generation.to_dict()
    apply_overrides(run, _section_overrides(overrides, DIFFUSION_SECTIONS))
    run.training.init_from = paths.absolute(path)
    return run


def vae_config_from_model(config: ml_collections.ConfigDict, path: str,
                          overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The run's config with the stored VAE's ``model`` section, the command's ``model`` overrides on top."""
    run = ml_collections.ConfigDict(config.to_dict())
    info = read_info(path, ("vae", "text-to-audio"))
    stored = read_info(info.path(info.components["vae"]), "vae") if info.kind == "text-to-audio" else info
    run.model = stored.config.to_dict()
    apply_overrides(run, _section_overrides(overrides, VAE_SECTIONS))
    run.training.init_from = paths.absolute(path)
    return run


def check_same_shapes(loaded: Any, abstract: Any, source: str) -> None:
    """The stored weights must be exactly the run's parameters: an error lists every missing, extra or
    mis-shaped weight (typically an override that changed the architecture)."""
    ours = {k: tuple(v.shape) for k, v in flatten(abstract).items()}
    theirs = {k: tuple(np.shape(v)) for k, v in flatten(loaded).items()}
    missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    shapes = [f"{k}: stored {theirs[k]}, run {ours[k]}" for k in sorted(set(ours) & set(theirs))
              if ours[k] != theirs[k]]
    if missing or extra or shapes:
        raise ValueError(f"--init-from {source}: the run's model does not match the stored weights (an override "
                         f"that changes the architecture?); missing in the stored model: {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''}; not in the run: {extra[:8]}"
                         f"{' ...' if len(extra) > 8 else ''}; shapes: {shapes[:8]}")


def placed(params: Any, shardings: Any) -> Any:
    """Host weights as global arrays in the run's shardings (each process supplies its own shards)."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda index: np.asarray(x)[index]), params,
        shardings)


@dataclasses.dataclass
class Trainable:
    """A stored denoiser's weights in the trainer's layout (``params``), their content hash and the model kind."""
    params: Any
    sha256: str
    kind: str


def load_trainable(path: str) -> Trainable:
    """An SAO-family diffusion or text-to-audio model, or a Stable Audio 3 bundle (its DiT and conditioner as
    :class:`~stableaudio_jax.models.sa3_conditioning.SA3Conditioned` holds them)."""
    from stableaudio_jax.store.sa3 import is_sa3, load_sa3
    if read_info(path).kind == "text-to-audio" and is_sa3(path):
        from stableaudio_jax.models.sa3_conditioning import SA3Conditioned
        model = load_sa3(path)
        return Trainable(SA3Conditioned.from_denoiser_params(model.params), weights_sha256(model.params), "sa3")
    model = load_diffusion(path)
    return Trainable(model.params, model.sha256, model.model.kind)


def start_diffusion_from_model(compiled, path: str) -> Callable[[], Any]:
    """The ``init`` of a diffusion run started from the stored model at ``path``."""
    def init():
        model = load_trainable(path)
        check_same_shapes(model.params, compiled.abstract.params, path)
        logger.info("initialised from %s (%s weights %s...)", path, model.kind, model.sha256[:12])
        fresh = compiled.init(jax.random.key(int(compiled.run.config.seed)))
        return compiled.start_from(fresh, placed(model.params, compiled.shardings.params))
    return init


def start_vae_from_model(compiled, path: str, seed: int) -> Callable[[], Any]:
    """The ``init`` of a VAE run started from the stored VAE at ``path`` (a fresh discriminator)."""
    def init():
        vae = load_vae(path)
        check_same_shapes(vae.params, compiled.abstract.gen_params, path)
        logger.info("initialised the VAE from %s (weights %s...)", path, vae.sha256[:12])
        fresh = compiled.init(jax.random.key(seed))
        return compiled.start_from(fresh, placed(vae.params, compiled.shardings.gen_params))
    return init


def check_data_text(config: ml_collections.ConfigDict, manifest: dict, data_dir: str) -> None:
    """New data for a model started ``--init-from``: its text features must be the kind the model reads (same
    width; the type is checked with the rest of the data); features from other weights of the same kind are
    allowed, with a warning."""
    path, text = config.training.init_from, config.conditioning.get("text")
    if text is None:  # an SA3 model: its width is checked when the run is built (diffusion_steps.sa3_model)
        return
    if int(text.width) != int(manifest["text_dim"]):
        raise ValueError(f"--init-from {path}: the model reads {text.width}-wide {text.get('type', 't5')} text "
                         f"features but {data_dir} holds {manifest['text_dim']}-wide ones; encode the data with the "
                         "model's text encoder (its text_encoder/ when it is a text-to-audio model)")
    info = read_info(path)
    recorded = manifest.get("encoder_config", {}).get("text", {}).get("sha256")
    if info.kind == "text-to-audio" and recorded and info.component_sha256.get("text_encoder") != recorded:
        logger.warning("--init-from %s: %s was encoded with other text encoder weights than the model's own "
                       "(same kind and width): the model will be fine-tuned on those features", path, data_dir)
