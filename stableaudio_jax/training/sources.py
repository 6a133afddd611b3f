"""Find the VAE and the text encoder a user points at, whatever they have on disk.

  VAE            a stored VAE or text-to-audio model (``stableaudio-jax export`` / ``convert``), or a ``train-vae``
                 workdir: its exported ``model/`` when the run finished (or was exported), else the latest
                 checkpoint's EMA weights, with a warning naming the step (an unfinished run)
  text encoder   a stored text encoder or text-to-audio model, or a Hugging Face T5 / CLAP directory; several
                 (``ID=PATH`` each) make one multi-conditioner encoder (T5 and CLAP together)

Every loaded model carries its content hash (``.sha256``), which pre-encoded data and training runs record.

A denoiser run's data names the VAE and text encoder that encoded it (its manifest's ``sources``, or the run's
``training.demo.vae`` / ``.text_encoder``): :func:`load_data_models` loads them for demos and exports, checked
against the weights the manifest records.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any, Sequence

import jax.numpy as jnp

from stableaudio_jax import paths
from stableaudio_jax.store import VAE, StoreError, T5TextEncoder, is_stored_model, load_text_encoder, load_vae
from stableaudio_jax.store.multi_text import MultiText, ordered_parts
from stableaudio_jax.training.checkpoints import EXPORT_DIR
from stableaudio_jax.training.workdirs import load_vae_from_workdir

logger = logging.getLogger(__name__)


def is_train_workdir(path: str) -> bool:
    return paths.isdir(paths.join(path, "checkpoints")) and paths.isfile(paths.join(path, "config.json"))


def resolve_vae(path: str | os.PathLike, dtype: Any = jnp.float32) -> VAE:
    path = paths.absolute(path)
    if is_stored_model(path):
        return load_vae(path, dtype)
    if is_train_workdir(path):
        exported = paths.join(path, EXPORT_DIR)
        if is_stored_model(exported):
            vae = load_vae(exported, dtype)
            logger.info("VAE: %s (exported from the train-vae run at step %s)", exported,
                        vae_step(exported))
            return vae
        vae, step, total = load_vae_from_workdir(path, dtype)
        logger.warning("VAE: %s has no exported model (the run is at step %d of %d): using checkpoint step %d's "
                       "EMA weights; `stableaudio-jax export --workdir %s` writes a model", path, step, total, step,
                       path)
        return vae
    raise FileNotFoundError(f"VAE {path!r}: expected a stored VAE or text-to-audio model (stableaudio_jax.json) or "
                            "a `stableaudio-jax train-vae` workdir (checkpoints/ + config.json)")


def _resolve_text_parts(specs: list[str], max_length, dtype: Any) -> MultiText:
    if len(specs) == 1:
        return resolve_text_encoder(specs[0], max_length, dtype)
    lengths = list(max_length) if isinstance(max_length, (list, tuple)) else [max_length] * len(specs)
    if len(lengths) == 1:
        lengths = lengths * len(specs)
    if len(lengths) != len(specs):
        raise ValueError(f"--max-length {lengths}: give one value for all text encoders or one per --text-encoder "
                         f"({len(specs)})")
    parts, locators = [], []
    for spec, length in zip(specs, lengths):
        named = re.fullmatch(r"([A-Za-z_][\w-]*)=(.+)", str(spec))
        name, where = named.groups() if named else ("", str(spec))
        text = resolve_text_encoder(where, length, dtype)
        name = name or text.config.get("type", "t5")
        parts.append((name, text))
        locators.append(f"{name}={paths.absolute(where)}")
    text = MultiText(parts)
    text.locators = locators  # where the parts came from: what pre-encoded data records, to load them again
    return text


def vae_step(directory: str) -> int | str:
    try:
        return paths.read_json(paths.join(directory, "stableaudio_jax.json")).get("provenance", {}).get("step", "?")
    except (OSError, ValueError):
        return "?"


def resolve_text_encoder(path: str | os.PathLike | Sequence[str], max_length: int | Sequence[int] | None = None,
                         dtype: Any = jnp.float32) -> T5TextEncoder:
    """One text encoder (``path``), or several used together (a list of ``ID=PATH`` or ``PATH``; the id defaults
    to the part's type: ``t5``, ``clap``), each tokenizing to ``max_length`` tokens (one value for all, or one
    per part)."""
    if not isinstance(path, (str, os.PathLike)):
        return _resolve_text_parts(list(path), max_length, dtype)
    if not isinstance(max_length, (int, type(None))):
        if len(max_length) != 1:
            raise ValueError(f"--max-length {list(max_length)}: one value per --text-encoder (1 given)")
        max_length = max_length[0]
    path = paths.absolute(path)
    if is_stored_model(path):
        text = load_text_encoder(path, max_length, dtype)
        if text.tokenizer is None:
            raise StoreError(f"{path}: the stored text encoder has no tokenizer file; cannot tokenize prompts")
        return text
    if paths.isfile(paths.join(path, "config.json")):  # a Hugging Face directory: T5 or CLAP
        local = paths.local_folder(path)  # the converters read local files: a bucket folder is mirrored
        if paths.read_json(os.path.join(local, "config.json")).get("model_type", "t5").startswith("clap"):
            from stableaudio_jax.convert import load_clap
            return load_clap(local, max_length=max_length or 77, dtype=dtype)
        from stableaudio_jax.convert import load_hf_t5
        return load_hf_t5(local, max_length=max_length or 128, dtype=dtype)
    raise FileNotFoundError(f"text encoder {path!r}: expected a Hugging Face T5 directory (config.json, weights, "
                            "spiece.model), a Hugging Face CLAP directory (config.json, weights, vocab.json + "
                            "merges.txt) or a stored text encoder / text-to-audio model (stableaudio_jax.json)")


def data_model_paths(config, manifest: dict | None) -> tuple[str, str]:
    """(VAE, text encoder) of a denoiser run's data: ``training.demo``'s when set, else the manifest's; "" when
    neither names one (synthetic data)."""
    d, sources = config.training.demo, (manifest or {}).get("sources", {})
    return d.vae or sources.get("vae", ""), d.text_encoder or sources.get("text_encoder", "")


def load_data_models(config, manifest: dict | None):
    """The data's VAE and text encoder, checked against the weights the manifest says encoded the data."""
    vae_path, text_path = data_model_paths(config, manifest)
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
