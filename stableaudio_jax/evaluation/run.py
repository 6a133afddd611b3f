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


def judge_paths(path: str) -> dict[str, str]:
    """Where each judge of ``evaluate.JUDGES`` is stored: the first at ``path`` (``--classifier``), the others
    beside it (``classifier.npz`` → ``classifier_linear.npz``)."""
    stem, ext = os.path.splitext(path)
    return {kind: path if i == 0 else f"{stem}_{kind}{ext or '.npz'}" for i, kind in enumerate(E.JUDGES)}


def _judges(path: str | None, data: str, notes: list[str], rate: int, channels: int) -> tuple[dict, dict]:
    """Every judge, loaded where its file exists or trained on ``data``'s train split (and saved when ``path`` is
    given), and validated on ``data``'s held-out renders in this run either way."""
    judges, reports = {}, {}
    for kind, where in (judge_paths(path) if path else dict.fromkeys(E.JUDGES)).items():
        if where and paths.isfile(where):
            judge = E.JUDGES[kind].load(where)
            reports[kind] = {"path": where, **E.validate_classifier(judge, data, sample_rate=rate, channels=channels,
                                                                     source=where)}
            origin = f"{where}, loaded"
        else:
            judge, reports[kind] = E.train_classifier(data, sample_rate=rate, channels=channels, kind=kind)
            if where:
                paths.makedirs(os.path.dirname(paths.absolute(where)))
                judge.save(where)
            origin = f"trained on {reports[kind]['train_clips']} clips of {data} (train split)"
        judges[kind] = judge
        notes.append(f"{kind} instrument judge ({judge.description}): {origin}; validated in this run: "
                     f"{reports[kind]['held_out_accuracy']:.1%} on {reports[kind]['held_out_clips']} held-out real "
                     "renders")
    return judges, reports


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
                              "notes": notes,
                              # what was asked, so a later reader (benchmarks/learning_record.py) can tell whether
                              # this evaluation is the one it would run
                              "settings": {"clips": clips, "steps": steps, "timing_prompts": timing_prompts,
                                           "baselines": baselines, "classifier": classifier}}
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
    judges, result["judges"] = _judges(classifier_path, data, notes, rate, channels)
    steps = steps or int(pipe.config.sampling.steps)
    others = E.load_split(data, "train", len(held), rate, channels)
    real_embeddings = judges["mlp"].embed(E.features_of([c.audio for c in held], rate))
    pipelines = {"trained model": pipe}
    if baselines:
        pipelines["untrained model"] = _untrained_pipeline(pipe, seed)
    adherence, timing = {}, {}
    for name, p in pipelines.items():
        generated = E.generate_for(p, held, steps, seed, progress=f"generate ({name})" if progress else None)
        adherence[name] = E.adherence_metrics(generated, held, judges, real_embeddings, rate)
        timing[name] = E.timing_metrics(p, held, steps, seed, timing_prompts)
    adherence["real held-out audio"] = E.real_reference(held, others, judges)
    adherence["real audio through the VAE"] = E.adherence_metrics(reconstructions, held, judges, real_embeddings,
                                                                  rate)
    notes.append(f"{steps} sampling steps ({pipe.config.sampling.sampler}); Fréchet distances in the MLP judge's "
                 f"{judges['mlp'].hidden_w.shape[1]}-d embedding against {len(held)} held-out real clips (the real row: "
                 "against train-split clips); [low, high]: 95% bootstrap intervals over clips (for Fréchet "
                 "distances: over resampled generated clips, which biases them upward: compare rows with rows)")
    return {"prompt adherence": adherence, "timing control": timing}
