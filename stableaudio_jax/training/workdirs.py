"""A run's workdir read back outside the run: ``config.json`` (written on a fresh start), ``data.json`` (what a
denoiser run trains on) and the checkpoints, restored on this host for exports, demos re-rendered afterwards and
the VAE an unfinished ``train-vae`` run has so far.
"""
from __future__ import annotations

import jax
import ml_collections

from stableaudio_jax import paths
from stableaudio_jax.store import VAE, StoreError, vae_from_config
from stableaudio_jax.store.builders import VAE_TYPES
from stableaudio_jax.training import diffusion_steps, vae_steps
from stableaudio_jax.training.checkpoints import CheckpointError, TrainCheckpointer
from stableaudio_jax.training.latent_source import SYNTHETIC, synthetic_text_width
from stableaudio_jax.training.optim import averaged

DATA_FILE = "data.json"


def record_data(workdir: str, data_dir: str, manifest: dict | None, config) -> None:
    """``<workdir>/data.json``: what the run trains on (the manifest without its shard list), for exports."""
    if jax.process_index() != 0:
        return
    summary = {"data": data_dir if data_dir == SYNTHETIC else paths.absolute(data_dir)}
    if manifest is None:
        summary.update(text_length=int(config.training.data.get("synthetic_text_length", 128)),
                       text_dim=synthetic_text_width(config))
    else:
        summary["manifest"] = {k: v for k, v in manifest.items() if k != "shards"}
    paths.makedirs(workdir)
    paths.write_json_atomic(paths.join(workdir, DATA_FILE), summary, indent=1, sort_keys=True)


def _restore(workdir: str, abstract, step: int | None, missing: str):
    """(state, saved config) of checkpoint ``step`` (default: the latest) of ``workdir``; ``missing``: the error's
    text when there is no checkpoint."""
    checkpointer = TrainCheckpointer(workdir, async_save=False)
    try:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{workdir}/checkpoints: {missing}")
        state, _, saved = checkpointer.restore(abstract, step)
    finally:
        checkpointer.close()
    return state, saved


def restore_diffusion_run(workdir: str, step: int | None):
    """(config as saved with the checkpoint, run, train state on this host, manifest) of checkpoint ``step``
    (default: the latest) of a ``train`` or ``train-arc`` workdir."""
    try:
        config = ml_collections.ConfigDict(paths.read_json(paths.join(workdir, "config.json")))
        data = paths.read_json(paths.join(workdir, DATA_FILE))
    except (OSError, ValueError) as e:
        raise StoreError(f"{workdir}: not a `stableaudio-jax train` workdir with its config.json and {DATA_FILE} "
                         f"({e})") from e
    manifest = data.get("manifest")
    text_length = manifest["text_length"] if manifest else data["text_length"]
    text_dim = manifest["text_dim"] if manifest else data["text_dim"]
    run = diffusion_steps.build(config, text_length, text_dim)
    state, saved = _restore(workdir, diffusion_steps.abstract_state(run), step, "no checkpoint to export")
    config = ml_collections.ConfigDict(saved) if saved else config  # the data hash the run recorded
    return config, run, state, manifest


def restore_vae_run(workdir: str, step: int | None = None):
    """(config, train state) of a train-vae run's checkpoint ``step`` (default: the latest), on the host."""
    workdir = paths.absolute(workdir)
    config = ml_collections.ConfigDict(paths.read_json(paths.join(workdir, "config.json")))
    if config.get("model", {}).get("type") not in VAE_TYPES:
        raise CheckpointError(f"{workdir}/config.json: model.type {config.get('model', {}).get('type')!r}; "
                              f"expected one of {sorted(VAE_TYPES)} (a train-vae workdir)")
    run = vae_steps.build(config)
    abstract = vae_steps.abstract_state(run, config.training.crop_samples, config.model.audio_channels)
    state, _ = _restore(workdir, abstract, step, "no checkpoint yet; train the VAE first")
    return config, state


def load_vae_from_workdir(workdir: str, dtype=None, step: int | None = None) -> tuple[VAE, int, int]:
    """(the EMA VAE of checkpoint ``step`` (default: the latest), that step, the run's total steps)."""
    config, state = restore_vae_run(workdir, step)
    module = vae_from_config(config.model, dtype=dtype or "float32")
    weights = jax.device_get(averaged(state.ema_params, state.gen_params))
    vae = VAE(module, weights, ml_collections.ConfigDict(config.model.to_dict()), paths.absolute(workdir))
    return vae, int(state.step), int(config.training.steps)
