"""``run_evaluation``: every section of ``evaluate.py`` for a stored model, with its reference points, to JSON +
markdown. The untrained references are the same architectures with freshly initialised weights (seeded), so the
distance between "trained" and "untrained" is what training bought, "real held-out audio" is the ceiling, and "real
audio through the VAE" is the ceiling this VAE leaves a denoiser (its decoder produces every generated clip)."""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from stableaudio_jax import paths
from stableaudio_jax.evaluation import evaluate as E
from stableaudio_jax.evaluation.classifier import InstrumentClassifier


def _untrained_vae(vae, seed: int):
    import jax
    import jax.numpy as jnp

    from stableaudio_jax.store import VAE
    module = vae.module
    audio = jnp.zeros((1, module.downsampling_ratio, module.audio_channels))
    params = jax.jit(lambda k: module.init(k, audio, sample=False))(jax.random.key(seed))
    return VAE(module, params, vae.config, "untrained")


def _untrained_pipeline(pipe, seed: int):
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from stableaudio_jax.inference.pipeline import TextToAudioPipeline
    from stableaudio_jax.store import DiffusionModel, TextToAudioModel
    trained = pipe.model.diffusion
    model, text = trained.model, pipe.model.text
    frames = 16 if not model.is_unet else int(np.prod(model.denoiser.factors))
    example = (jnp.zeros((1, frames, model.latent_channels)), jnp.zeros((1, text.max_length, text.width)),
               jnp.ones((1, text.max_length), bool))
    params = jax.jit(lambda k: nn.unbox(model.init(k, *example)))(jax.random.key(seed))
    diffusion = DiffusionModel(model, params, trained.config, "untrained")
    return TextToAudioPipeline(TextToAudioModel(text, diffusion, pipe.model.vae, pipe.model.config, "untrained"))


def _classifier(path: str | None, data: str, notes: list[str], rate: int, channels: int
                ) -> tuple[InstrumentClassifier, dict]:
    if path and paths.isfile(path):  # a stored judge is validated on this data, as a fresh one is
        classifier = InstrumentClassifier.load(path)
        report = {"path": path, **E.validate_classifier(classifier, data, sample_rate=rate, channels=channels,
                                                        source=path)}
        notes.append(f"instrument classifier: {path}, validated in this run: {report['held_out_accuracy']:.1%} "
                     f"on {report['held_out_clips']} held-out real renders")
        return classifier, report
    classifier, report = E.train_classifier(data, sample_rate=rate, channels=channels)
    if path:
        paths.makedirs(os.path.dirname(paths.absolute(path)))
        classifier.save(path)
    notes.append(f"instrument classifier trained on {report['train_clips']} clips of {data} (train split); "
                 f"{report['held_out_accuracy']:.1%} on {report['held_out_clips']} held-out real renders")
    return classifier, report


def run_evaluation(data: str, out_dir: str, model: str | None = None, vae: str | None = None, split: str = "test",
                   clips: int = 16, steps: int | None = None, classifier: str | None = None, seed: int = 0,
                   baselines: bool = True, progress: bool = False, timing_prompts: int = 48) -> dict[str, Any]:
    """Evaluates a stored text-to-audio ``model`` (all sections) or a ``vae`` alone (autoencoder) on the held-out
    ``split`` of a demo-data folder; writes ``evaluation.json`` + ``evaluation.md`` into ``out_dir``. ``progress``:
    a bar per model's generations (the long part). ``timing_prompts``: generations per model for timing control."""
    from stableaudio_jax.store import load_vae
    if not model and not vae:
        raise ValueError("evaluate: give a text-to-audio model (--model) or a VAE (--vae)")
    started, notes = time.time(), []
    trained_vae = load_vae(vae or model)
    rate, channels = int(trained_vae.module.sample_rate), int(trained_vae.module.audio_channels)
    held = E.load_split(data, split, clips, rate, channels)  # in the model's audio format
    result: dict[str, Any] = {"model": model, "vae": vae, "data": paths.absolute(data), "split": split,
                              "seed": seed, "sample_rate": rate, "channels": channels, "sections": {},
                              "notes": notes}
    reconstructions = E.reconstruct(trained_vae, held)
    autoencoder = {"trained VAE": E.autoencoder_metrics(reconstructions, held)}
    if baselines:
        autoencoder["untrained VAE"] = E.autoencoder_metrics(E.reconstruct(_untrained_vae(trained_vae, seed), held),
                                                             held)
    result["sections"]["autoencoder reconstruction"] = autoencoder
    if model:
        result["sections"].update(_generation_sections(model, data, held, reconstructions, steps, classifier, seed,
                                                       baselines, notes, result, progress, timing_prompts))
    result["seconds"] = time.time() - started
    result["files"] = dict(zip(("json", "markdown"), E.write_report(result, out_dir)))
    return result


def _generation_sections(model: str, data: str, held, reconstructions, steps, classifier_path, seed: int,
                         baselines: bool, notes: list[str], result: dict, progress: bool = False,
                         timing_prompts: int = 48) -> dict:
    from stableaudio_jax.inference.pipeline import TextToAudioPipeline
    pipe = TextToAudioPipeline.from_checkpoint(model)
    rate, channels = pipe.sample_rate, pipe.audio_channels
    classifier, result["classifier"] = _classifier(classifier_path, data, notes, rate, channels)
    steps = steps or int(pipe.config.sampling.steps)
    others = E.load_split(data, "train", len(held), rate, channels)
    real_embeddings = classifier.embed(E.features_of([c.audio for c in held], rate))
    pipelines = {"trained model": pipe}
    if baselines:
        pipelines["untrained model"] = _untrained_pipeline(pipe, seed)
    adherence, timing = {}, {}
    for name, p in pipelines.items():
        generated = E.generate_for(p, held, steps, seed, progress=f"generate ({name})" if progress else None)
        adherence[name] = E.adherence_metrics(generated, held, classifier, real_embeddings, rate)
        timing[name] = E.timing_metrics(p, held, steps, seed, timing_prompts)
    adherence["real held-out audio"] = E.real_reference(held, others, classifier)
    adherence["real audio through the VAE"] = E.adherence_metrics(reconstructions, held, classifier,
                                                                  real_embeddings, rate)
    notes.append(f"{steps} sampling steps ({pipe.config.sampling.sampler}); Fréchet distances in the classifier's "
                 f"{classifier.hidden_w.shape[1]}-d embedding against {len(held)} held-out real clips (the real row: "
                 "against train-split clips); [low, high]: 95% bootstrap intervals over clips (for Fréchet "
                 "distances: over resampled generated clips, which biases them upward: compare rows with rows)")
    return {"prompt adherence": adherence, "timing control": timing}
