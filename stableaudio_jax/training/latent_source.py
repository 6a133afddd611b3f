"""The latent data a denoiser trains on (``train``, ``train-arc``): an ``encode`` output (TFRecord shards +
manifest, read per host) or ``"synthetic"`` (correctly shaped random latents, for benchmarks).

:meth:`LatentSource.open` checks that the manifest can feed the model (latent channels, the VAE config, the text
encoder's kind, width and parts) and records the data's encoder hash (configs *and* weights of the VAE and text
encoder) in ``config.training.data``: a resumed run reads the first run's hash from its checkpoint, so re-encoded
data raises instead of mixing two encodings.
"""
from __future__ import annotations

import dataclasses

import jax

from stableaudio_jax.data import latent_reader
from stableaudio_jax.data.audio_folder import CheckpointableIterator
from stableaudio_jax.data.latent_records import config_hash, manifest_path, read_manifest
from stableaudio_jax.store.multi_text import MULTI_TEXT, ordered_parts
from stableaudio_jax.training.checkpoints import TrainCheckpointer
from stableaudio_jax.training.diffusion_steps import BATCH_KEYS, SA3_TYPE

SYNTHETIC = "synthetic"


@dataclasses.dataclass
class LatentSource:
    """The run's data: its manifest (None for synthetic data), the checkpointable iterator of this host's batches,
    and the text features' shape."""
    manifest: dict | None
    data: CheckpointableIterator
    text_length: int
    text_width: int

    @classmethod
    def open(cls, config, data_dir: str, checkpointer: TrainCheckpointer) -> "LatentSource":
        """This host's share of ``data_dir`` in batches of ``training.batch_size / processes``; sets
        ``config.training.data.encoder_config_hash`` (the checkpoint's on a resume, else the data's)."""
        t = config.training
        saved = saved_data_hash(checkpointer)
        if saved:
            t.data.encoder_config_hash = saved
        manifest, data = read_latents(config, data_dir, t.batch_size // jax.process_count(), latent_channels(config))
        if manifest is None:
            return cls(None, data, int(t.data.get("synthetic_text_length", 128)), synthetic_text_width(config))
        t.data.encoder_config_hash = manifest["encoder_config_hash"]
        return cls(manifest, data, int(manifest["text_length"]), int(manifest["text_dim"]))

    @property
    def seconds_per_frame(self) -> float:
        """Audio seconds one latent frame stands for (synthetic data: SAO's 2048 samples at 44.1 kHz)."""
        if self.manifest is None:
            return 2048 / 44100
        return self.manifest["downsampling_ratio"] / self.manifest["sample_rate"]


def model_batch(batch: dict) -> dict:
    """What the training step takes of a reader's batch."""
    return {k: batch[k] for k in BATCH_KEYS}


def saved_data_hash(checkpointer: TrainCheckpointer) -> str | None:
    """The encoder hash the run's latest checkpoint recorded (None before the first checkpoint)."""
    if checkpointer.latest_step() is None:
        return None
    return checkpointer.saved_config().get("training", {}).get("data", {}).get("encoder_config_hash") or None


def synthetic_text_width(config) -> int:
    """Text feature width for synthetic data: the configured text encoder's, else the conditioning width."""
    if config.model.type == SA3_TYPE:
        return int(config.conditioning.text_dim)
    text = config.conditioning.get("text") or {}
    return int(text.get("width") or (text.get("model") or {}).get("d_model") or config.conditioning.cond_dim)


def latent_channels(config) -> int:
    return int(config.model.io_channels if config.model.type in ("dit", SA3_TYPE) else config.model.in_channels)


def check_data_fits(manifest: dict, config, data_dir: str) -> None:
    """Raises ValueError naming the manifest when its latents or text cannot feed this model (a multi-conditioner
    config's unset part sizes are filled in from the data)."""
    path = manifest_path(data_dir)
    if manifest["text"] != "embeddings":
        raise ValueError(f"{path}: text is {manifest['text']!r}; the diffusion trainer reads pre-computed T5 "
                         "embeddings: re-encode with `stableaudio-jax encode --text embeddings`")
    if config.model.type == SA3_TYPE:
        return _check_sa3_data(manifest, config, path)
    width = (config.conditioning.get("text") or {}).get("width")
    if width is not None and int(width) != manifest["text_dim"]:
        raise ValueError(f"{path}: text embeddings are {manifest['text_dim']} wide but config.conditioning.text.width "
                         f"is {width} (leave it unset to take the data's width)")
    encoded_by = manifest.get("encoder_config", {}).get("text", {}).get("type", "t5")
    conditioner = (config.conditioning.get("text") or {}).get("type", "t5")
    if encoded_by != conditioner:
        raise ValueError(f"{path}: the text features were encoded by a {encoded_by!r} text encoder but this model's "
                         f"conditioner is config.conditioning.text.type={conditioner!r}; pass "
                         f"--config.conditioning.text.type={encoded_by} or encode with a {conditioner} text encoder")
    if conditioner == MULTI_TEXT:
        _fit_text_parts(config.conditioning.text, manifest["encoder_config"]["text"]["model"], path)
    vae = manifest.get("encoder_config", {}).get("vae")
    if "vae" in config and vae is not None and config_hash(vae) != config_hash(config.vae):
        raise ValueError(f"{path}: the latents were encoded by a VAE config ({vae}) other than this model's "
                         f"config.vae ({config.vae.to_dict()})")


def _check_sa3_data(manifest: dict, config, path: str) -> None:
    """An SA3 model reads T5Gemma states of its conditioner's width, latents of a SAME autoencoder."""
    encoder = manifest.get("encoder_config", {})
    text_type = encoder.get("text", {}).get("type", "t5")
    if text_type != "t5gemma":
        raise ValueError(f"{path}: the text features were encoded by a {text_type!r} text encoder; an SA3 model "
                         "reads T5Gemma states: encode with a T5Gemma text encoder (a converted SA3 model's "
                         "text_encoder/)")
    vae_type = encoder.get("vae", {}).get("type")
    if vae_type not in (None, "same"):
        raise ValueError(f"{path}: the latents were encoded by a {vae_type!r} VAE; an SA3 model takes SAME latents "
                         "(encode with a SAME autoencoder: a converted SA3 model's vae/)")


def _fit_text_parts(text, encoded: dict, path: str) -> None:
    """The config's text parts must be the data's (ids and types, in order, CLAP's ``layer`` / ``output``); each
    part's encoder ``model`` and ``max_length`` are the data's (as a single encoder's length is)."""
    ours = [(name, p.get("type", "t5")) for name, p in ordered_parts(text)]
    theirs = [(name, p.get("type", "t5")) for name, p in ordered_parts(encoded, f"{path}: the data's text parts")]
    if ours != theirs:
        raise ValueError(f"{path}: the text features were encoded by the parts {theirs} (id, type) but "
                         f"config.conditioning.text.parts are {ours}; encode with one --text-encoder ID=PATH per part, "
                         "in the config's order")
    for (name, part), (_, data) in zip(ordered_parts(text), ordered_parts(encoded)):
        part["model"], part["max_length"] = data["model"], int(data["max_length"])  # as for one encoder: the data's
        for key in ("layer", "output"):
            if key in data and part.get(key) not in (None, data[key]):
                raise ValueError(f"{path}: text part {name!r}: the data has {key}={data[key]!r}, "
                                 f"config.conditioning.text.parts has {part[key]!r}")
            elif key in data:
                part[key] = data[key]


def read_latents(config, data_dir: str, per_host: int, run_channels: int):
    """(manifest or None, a checkpointable iterator of this host's ``per_host``-example batches) of ``data_dir``;
    the manifest is checked against the model and, when ``config.training.data.encoder_config_hash`` is set,
    against that hash."""
    t = config.training
    if data_dir == SYNTHETIC:
        text_length = int(t.data.get("synthetic_text_length", 128))
        ds = latent_reader.synthetic_latent_dataset(per_host, t.crop_frames, run_channels, text_length,
                                                    synthetic_text_width(config), seed=config.seed)
        return None, CheckpointableIterator(ds)
    manifest = read_manifest(data_dir)
    check_data_fits(manifest, config, data_dir)
    expected = t.data.get("encoder_config_hash") or None  # set by the first run, saved with its checkpoints
    ds = latent_reader.latent_dataset(data_dir, per_host, t.crop_frames, seed=config.seed,
                                      process_index=jax.process_index(), process_count=jax.process_count(),
                                      shuffle_buffer=t.data.shuffle_buffer, on_corrupt=t.data.on_corrupt,
                                      latent_channels=run_channels, encoder_config_hash=expected)
    return manifest, CheckpointableIterator(ds)
