"""The quickstart's stages: ``stage(config, paths, denoiser, progress)``, each skipped when its output is complete.

Each calls the same function its own command does (``demo-data``, ``ingest``, ``train-vae``, ``encode``, ``train``,
``generate``, ``evaluate``), so the quickstart is the documented workflow run end to end, not a separate path.
"""
from __future__ import annotations

import json
import logging
import os

from stableaudio_jax import paths as storage  # (``paths`` is the run's Paths: where each stage writes)

logger = logging.getLogger(__name__)


def _exists(*parts: str) -> bool:
    return storage.exists(storage.join(*parts))


def _skip(name: str, where: str) -> None:
    logger.info("  %s: already done (%s)", name, where)


def demo_data(config, paths, denoiser: str, progress: bool) -> None:
    from stableaudio_jax.data.demo_data import REPORT_FILE, build_demo_data
    if _exists(paths.demo, REPORT_FILE):
        return _skip("demo data", paths.demo)
    d = config.demo
    build_demo_data(paths.demo, clips=d.clips, seconds=d.seconds, min_seconds=d.min_seconds,
                    instruments=list(d.instruments), seed=config.seed, progress=progress)


def text_encoder(config, paths, denoiser: str, progress: bool) -> None:
    """A sentencepiece vocabulary of the train captions and a small T5 with frozen random weights (nothing to
    download; the denoiser learns what the tokens mean)."""
    import jax
    import jax.numpy as jnp

    from stableaudio_jax.models.t5 import T5Encoder
    from stableaudio_jax.store import T5TextEncoder, is_stored_model, save_text_encoder
    from stableaudio_jax.store.tokenizers import T5Tokenizer, train_sentencepiece
    if is_stored_model(paths.text_encoder):
        return _skip("text encoder", paths.text_encoder)
    with storage.open(storage.join(paths.demo, "captions.jsonl"), encoding="utf-8") as f:
        captions = [row["caption"] for row in map(json.loads, f) if row["split"] == "train"]
    t = config.text
    spiece = train_sentencepiece(captions * 4, os.path.join(paths.workdir, "spiece.model"), vocab_size=t.vocab_size)
    tokenizer = T5Tokenizer(spiece, t.max_length)
    heads = 4
    module = T5Encoder(vocab_size=max(t.vocab_size, tokenizer.vocab_size), d_model=t.d_model, d_kv=t.d_model // heads,
                       d_ff=2 * t.d_model, num_layers=t.num_layers, num_heads=heads)
    ids = jnp.zeros((1, t.max_length), jnp.int32)
    params = jax.jit(lambda k: module.init(k, ids, jnp.ones(ids.shape, bool)))(jax.random.key(config.seed))
    save_text_encoder(paths.text_encoder, T5TextEncoder(module, params, tokenizer, t.max_length, "quickstart"))


def ingest(config, paths, denoiser: str, progress: bool) -> None:
    from stableaudio_jax.data.ingest import REPORT_NAME, ingest as ingest_folder
    if _exists(paths.audio, REPORT_NAME):
        return _skip("ingest", paths.audio)
    ingest_folder(storage.join(paths.demo, "train"), paths.audio, sample_rate=config.audio.sample_rate,
                  channels=config.audio.channels, progress=progress)


def _loop_overrides(steps: int) -> list[str]:
    # four checkpoints kept: the learning record evaluates each (benchmarks/learning_record.py)
    return [f"training.steps={steps}", f"training.log_every={max(5, steps // 40)}",
            f"training.checkpoint_every={max(10, steps // 4)}", "training.keep_checkpoints=4"]


def _finished(model_dir: str, steps: int) -> bool:
    from stableaudio_jax.store import is_stored_model, read_info
    return is_stored_model(model_dir) and read_info(model_dir).provenance.get("step") == steps


class StoppedEarly(RuntimeError):
    """A training stage returned before its last step (a stop signal or a preemption notice saved a checkpoint):
    the next stages must not run on that unfinished model (``encode`` would take the VAE's last checkpoint)."""


def _require_finished(stage: str, run_dir: str, model_dir: str, steps: int) -> None:
    if _finished(model_dir, steps):
        return
    from stableaudio_jax.training.checkpoints import TrainCheckpointer
    checkpointer = TrainCheckpointer(run_dir)
    try:
        step = checkpointer.latest_step()
    finally:
        checkpointer.close()
    raise StoppedEarly(f"{stage} stopped at step {step} of {steps} (checkpoint in {run_dir}/checkpoints); rerun the "
                       "same command to resume")


def train_vae(config, paths, denoiser: str, progress: bool) -> None:
    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.training.vae_train import train_vae as train
    v = config.vae
    if _finished(os.path.join(paths.vae, "model"), v.steps):
        return _skip("train-vae", paths.vae)
    vae_config = load_config(v.config, [*v.overrides, *_loop_overrides(v.steps), f"seed={config.seed}"])
    train(vae_config, paths.vae, paths.audio, progress=progress)
    _require_finished("train-vae", paths.vae, os.path.join(paths.vae, "model"), v.steps)


def encode(config, paths, denoiser: str, progress: bool) -> None:
    from stableaudio_jax.data.encode import encode_dataset
    from stableaudio_jax.store import load_text_encoder
    from stableaudio_jax.training.sources import resolve_vae
    if _exists(paths.latents, "manifest.json"):
        return _skip("encode", paths.latents)
    e = config.encode
    text = load_text_encoder(paths.text_encoder)
    encode_dataset(paths.audio, paths.latents, resolve_vae(paths.vae), text, window_frames=e.window_frames,
                   batch_size=e.batch_size, seed=config.seed, progress=progress, text_source=text.source)


def train(config, paths, denoiser: str, progress: bool) -> None:
    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.training.diffusion_train import train_diffusion
    section = config.dit if denoiser == "dit" else config.unet
    if _finished(paths.model, section.steps):
        return _skip("train", paths.denoiser)
    overrides = [*section.overrides, *_loop_overrides(section.steps), "training.demo.every=0", f"seed={config.seed}"]
    train_config = load_config(section.config, overrides)
    if "vae" in train_config:  # the DiT config names its VAE: the one trained in stage 4
        import ml_collections

        from stableaudio_jax.store import read_info
        train_config.vae = ml_collections.ConfigDict(read_info(os.path.join(paths.vae, "model")).config.to_dict())
    train_diffusion(train_config, paths.denoiser, paths.latents, progress=progress)
    _require_finished("train", paths.denoiser, paths.model, section.steps)


def generate(config, paths, denoiser: str, progress: bool) -> None:
    """Held-out captions (test split: pieces never trained on) → wav + PNG, beside the real clip of each caption."""
    from stableaudio_jax.audio.io import load_audio, write_audio, write_spectrogram_png
    from stableaudio_jax.inference.pipeline import TextToAudioPipeline
    index = storage.join(paths.samples, "index.json")
    if storage.isfile(index):
        return _skip("generate", paths.samples)
    with storage.open(storage.join(paths.demo, "captions.jsonl"), encoding="utf-8") as f:
        rows = [row for row in map(json.loads, f) if row["split"] == "test"][:config.generate.prompts]
    pipe = TextToAudioPipeline.from_checkpoint(paths.model)
    g = config.generate
    seconds = [min(float(r["seconds"]), pipe.window_seconds) for r in rows]  # each caption's clip length
    audio = pipe.generate([r["caption"] for r in rows], seconds_total=seconds, steps=g.steps, cfg_scale=g.cfg_scale,
                          seed=config.seed)
    audio = [clip[:round(s * pipe.sample_rate)] for clip, s in zip(audio, seconds)]
    storage.makedirs(paths.samples)
    entries = []
    for i, (row, clip) in enumerate(zip(rows, audio)):
        generated = write_audio(storage.join(paths.samples, f"{i:02d}_generated.wav"), clip, pipe.sample_rate)
        write_spectrogram_png(generated.replace(".wav", ".png"), clip, pipe.sample_rate)
        real = storage.join(paths.samples, f"{i:02d}_real.wav")
        storage.copy_file(storage.join(paths.demo, row["path"]), real)
        write_spectrogram_png(real.replace(".wav", ".png"), load_audio(real)[0], pipe.sample_rate)
        entries.append({"caption": row["caption"], "generated": os.path.basename(generated),
                        "real": os.path.basename(real)})
    storage.write_json_atomic(index, {"model": paths.model, "steps": g.steps, "cfg_scale": g.cfg_scale,
                                      "samples": entries}, indent=1)


def evaluate(config, paths, denoiser: str, progress: bool) -> None:
    from stableaudio_jax.evaluation.run import run_evaluation
    if _exists(paths.evaluation, "evaluation.json"):
        return _skip("evaluate", paths.evaluation)
    run_evaluation(paths.demo, paths.evaluation, model=paths.model, split="test", clips=config.evaluate.clips,
                   steps=config.evaluate.steps, classifier=paths.classifier,
                   seed=config.seed, timing_prompts=config.evaluate.timing_prompts)
