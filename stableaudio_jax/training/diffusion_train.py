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

import logging
import os
from typing import Any

import jax
import ml_collections

from stableaudio_jax import paths
from stableaudio_jax.diffusion.samplers import default_sampling
from stableaudio_jax.parallel.distributed import initialize
from stableaudio_jax.parallel.mesh import make_mesh
from stableaudio_jax.store import StoreError, TextToAudioModel, diffusion_model, save_diffusion, save_text_to_audio
from stableaudio_jax.store.format import host_arrays
from stableaudio_jax.store.multi_text import ordered_parts
from stableaudio_jax.training import diffusion_steps
from stableaudio_jax.training.checkpoints import TrainCheckpointer
from stableaudio_jax.training.flops import train_step_flops
from stableaudio_jax.training.init_from import check_data_text, start_diffusion_from_model
from stableaudio_jax.training.lora_runs import export_adapter, export_merged, lora_base, sampling_params
from stableaudio_jax.training.latent_source import SYNTHETIC, LatentSource, model_batch, synthetic_text_width
from stableaudio_jax.training.loop import abstract_with_shardings, check_global_batch, resume_or_start, run_loop
from stableaudio_jax.training.memory_fit import Need, check_fits
from stableaudio_jax.training.metrics import MetricsWriter
from stableaudio_jax.training.sources import EXPORT_DIR, resolve_text_encoder, resolve_vae

logger = logging.getLogger(__name__)
DATA_FILE = "data.json"


def train_diffusion(config: ml_collections.ConfigDict, workdir: str, data_dir: str, progress: bool = False,
                    max_steps: int | None = None) -> dict[str, Any]:
    """Trains until ``config.training.steps`` (or ``max_steps`` more steps); returns the last logged metrics."""
    initialize(config.get("distributed"))
    config = ml_collections.ConfigDict(config.to_dict())  # a private copy: the data hash is recorded in it
    t = config.training
    mesh = make_mesh(config.mesh)
    check_global_batch(t.batch_size, mesh)
    checkpointer = TrainCheckpointer(workdir, keep=t.keep_checkpoints)
    source = LatentSource.open(config, data_dir, checkpointer)
    manifest, data = source.manifest, source.data
    if manifest is not None and t.get("init_from"):
        check_data_text(config, manifest, data_dir)
    record_data(workdir, data_dir, manifest, config)
    text_length, text_width = source.text_length, source.text_width
    compiled = diffusion_steps.compiled(config, mesh, text_length, text_width)
    if t.get("check_memory", True):
        check_fits(config, lambda c: Need.of(diffusion_steps.compiled(c, make_mesh(c.mesh), text_length, text_width)
                                             .lower(c.training.batch_size).compile()), "train")
    base = None
    if compiled.run.lora is not None:  # adapters on frozen weights: the base is the step's argument, not state
        base = lora_base(compiled, t.init_from, config, checkpointer)
        init = lambda: compiled.init(jax.random.key(config.seed))  # noqa: E731
    elif t.get("init_from"):
        init = start_diffusion_from_model(compiled, t.init_from)
    else:
        init = lambda: compiled.init(jax.random.key(config.seed))  # noqa: E731
    state, data_state, _ = resume_or_start(
        checkpointer, abstract_with_shardings(compiled.abstract, compiled.shardings), init, config, workdir)
    data.restore(data_state)
    writer = MetricsWriter(workdir)
    start = int(state.step)
    end = t.steps if max_steps is None else min(t.steps, start + max_steps)
    demos = _demos(compiled.run, config, manifest, workdir)
    after = None if demos is None else lambda done, s: demos(done, lambda: sampling_params(compiled.run, s, base))
    try:
        frozen = () if base is None else (base,)
        state, last = run_loop(state, lambda step, s, batch: compiled.step(s, model_batch(batch), *frozen), data,
                               diffusion_steps.batch_sharding(mesh), start=start, end=end,
                               checkpointer=checkpointer, writer=writer, config=config, desc="train",
                               progress=progress, after_step=after,
                               audio_seconds_per_step=t.batch_size * t.crop_frames * source.seconds_per_frame,
                               flops_per_step=train_step_flops(compiled, t.batch_size))
        checkpointer.wait()
        if int(state.step) == t.steps and base is not None:
            export_adapter(compiled.run, state, config, os.path.join(workdir, EXPORT_DIR))
        elif int(state.step) == t.steps:
            export_model(compiled.run, state, config, manifest, os.path.join(workdir, EXPORT_DIR))
    finally:
        checkpointer.close()
        writer.close()
    return last


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


def export_from_workdir(workdir: str, out: str | None = None, step: int | None = None, merged: bool = False) -> str:
    """Exports checkpoint ``step`` (default: the latest) of a ``train`` run, finished or not, as
    :func:`export_model` does at the end of a run (default: ``<workdir>/model``); a LoRA run's adapter alone, or
    with ``merged`` the base model with the adapter merged in."""
    workdir = paths.absolute(workdir)
    config, run, state, manifest = _restore(workdir, step)
    out = out or os.path.join(workdir, EXPORT_DIR)
    if merged and run.lora is None:
        raise ValueError(f"{workdir}: --merged exports a LoRA run (training.lora.rank > 0); this run trains every "
                         "weight, export it without --merged")
    if run.lora is not None:
        return (export_merged if merged else export_adapter)(run, state, config, out)
    return export_model(run, state, config, manifest, out)


def _restore(workdir: str, step: int | None):
    """(config as saved with the checkpoint, run, train state on this host, manifest) of checkpoint ``step``
    (default: the latest) of a ``train`` workdir."""
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
    checkpointer = TrainCheckpointer(workdir, async_save=False)
    try:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise StoreError(f"{workdir}/checkpoints: no checkpoint to export")
        state, _, saved = checkpointer.restore(diffusion_steps.abstract_state(run), step)
    finally:
        checkpointer.close()
    config = ml_collections.ConfigDict(saved) if saved else config  # the data hash the run recorded
    return config, run, state, manifest


def render_demos(workdir: str, step: int | None = None, out: str | None = None) -> list[str]:
    """The demos of checkpoint ``step`` (default: the latest) of a full (not LoRA) ``train`` run, rendered in this
    one process as the run renders them (into ``<out or workdir>/demos/step_<N>``): a run's demos can be
    re-made, or made for a checkpoint the run did not render, on one machine."""
    workdir = paths.absolute(workdir)
    config, run, state, manifest = _restore(workdir, step)
    if run.lora is not None:
        raise ValueError(f"{workdir}: a LoRA run; render demos of its merged export (`stableaudio-jax export "
                         "--merged`) with `stableaudio-jax generate` instead")
    from stableaudio_jax.training.demos import DemoWriter
    vae, text = _load_sources(config, manifest)
    writer = DemoWriter(run, vae, text, config, out or workdir)
    return writer(int(state.step), host_arrays(sampling_params(run, state, None)))


def _sources(config, manifest: dict | None) -> tuple[str, str]:
    d, sources = config.training.demo, (manifest or {}).get("sources", {})
    return d.vae or sources.get("vae", ""), d.text_encoder or sources.get("text_encoder", "")


def _load_sources(config, manifest: dict | None):
    """The data's VAE and text encoder, checked against the weights the manifest says encoded the data."""
    vae_path, text_path = _sources(config, manifest)
    vae = resolve_vae(vae_path)
    encoder = (manifest or {}).get("encoder_config", {})
    length = manifest["text_length"] if manifest else None
    if not isinstance(text_path, str):  # several text encoders, each tokenizing to the length it encoded with
        length = [int(p["max_length"]) for _, p in ordered_parts(encoder["text"]["model"])]
    text = resolve_text_encoder(text_path, max_length=length)
    for what, model, recorded in (("VAE", vae, encoder.get("vae_sha256")),
                                  ("text encoder", text, encoder.get("text", {}).get("sha256"))):
        if recorded and model.sha256 != recorded:
            raise StoreError(f"the {what} at {model.source} is not the one that encoded this data (weights "
                             f"{model.sha256[:12]}..., the manifest records {recorded[:12]}...)")
    return vae, text


def _demos(run, config, manifest, workdir: str):
    """The demo hook every process runs (it gathers the weights); only process 0 loads the VAE and text encoder
    and renders."""
    if not config.training.demo.every:
        return None
    if not all(_sources(config, manifest)):
        raise ValueError("training.demo.every is set but no VAE / text encoder is known: set training.demo.vae and "
                         "training.demo.text_encoder (or train on `stableaudio-jax encode` output, which records them)")
    from stableaudio_jax.training.demos import DemoHook, DemoWriter
    writer = None
    if jax.process_index() == 0:
        vae, text = _load_sources(config, manifest)
        writer = DemoWriter(run, vae, text, config, workdir)
    return DemoHook(config.training.demo.every, writer)


def export_model(run, state, config, manifest: dict | None, directory: str, sampling: dict | None = None) -> str:
    """The trained model (EMA denoiser + conditioners) as a text-to-audio model with the data's T5 and VAE, or the
    diffusion model alone when they are unknown; ``sampling``: generation defaults other than the objective's.
    Every process gathers; process 0 writes."""
    params = host_arrays(sampling_params(run, state, None))
    if jax.process_index() != 0:
        return directory
    model = diffusion_model(run.config, params, directory)
    provenance = {"run": paths.absolute(os.path.dirname(paths.absolute(directory))), "step": int(state.step),
                  "data_encoder_config_hash": config.training.data.get("encoder_config_hash", "")}
    if not all(_sources(config, manifest)):
        path = save_diffusion(directory, model, overwrite=True, provenance=provenance)
        logger.info("exported the diffusion model to %s (no VAE / text encoder is known for this data, so it is not "
                    "a text-to-audio model; train on `stableaudio-jax encode` output for one)", path)
        return path
    vae, text = _load_sources(config, manifest)
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
