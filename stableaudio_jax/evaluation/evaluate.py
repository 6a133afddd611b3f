"""``evaluate``: does the system learn? Numbers for the autoencoder, prompt adherence and timing control, with the
same numbers for reference points measured in the same run (real held-out audio, untrained models).

  autoencoder    held-out clips through encode → decode: SI-SDR, multi-resolution STFT distance, mel distance
                 (auraloss' definitions, as the Stable Audio papers report them)
  adherence      generations for held-out captions: instrument accuracy (right only when both judges, the MLP of
                 ``classifier.py`` and the linear model of ``linear_judge.py``, each first validated on held-out
                 real renders, name the prompt's instrument), tempo error (librosa's beat tracker), Fréchet
                 distance between generated and held-out real clips in the MLP judge's embedding space
  timing         generations asked for lengths spread over the window: energy after ``seconds_total`` against
                 before it, and how often the sound's detected end is within 0.25 s of the request
Every number is a mean over clips with its 95 % bootstrap interval (``<name>_ci95``).

Held-out data is a demo-data split (``valid`` or ``test``: pieces never seen in training), with its attributes.
Every clip is first brought to the model's audio format (rate, channels), and the judges are trained on clips in
that format too: real and generated audio are judged with the same bandwidth.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

from stableaudio_jax import paths
from stableaudio_jax.audio import metrics
from stableaudio_jax.evaluation.classifier import InstrumentClassifier, clip_features
from stableaudio_jax.evaluation.linear_judge import LinearJudge

MIN_CLASSIFIER_ACCURACY = 0.95
# Two independent instrument judges (different features, different model families): a generated clip counts as
# the prompt's instrument only when both say so. The first one's embedding is the Fréchet distances' space.
JUDGES = {"mlp": InstrumentClassifier, "linear": LinearJudge}


@dataclasses.dataclass(frozen=True)
class Clip:
    path: str
    caption: str
    instrument: str
    bpm: int
    audio: np.ndarray  # [samples, channels] float32
    sample_rate: int


def load_split(demo_dir: str | os.PathLike, split: str, limit: int | None = None, sample_rate: int | None = None,
               channels: int | None = None) -> list[Clip]:
    """The clips of one demo-data split, with their attributes (``captions.jsonl``), optionally resampled and
    channel-matched to a model's format."""
    from stableaudio_jax.audio.io import load_audio
    demo_dir = os.fspath(demo_dir)
    index = paths.join(demo_dir, "captions.jsonl")
    if not paths.isfile(index):
        raise FileNotFoundError(f"{demo_dir}: no captions.jsonl; expected a `stableaudio-jax demo-data` folder")
    with paths.open(index, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if r["split"] == split][:limit]
    if not rows:
        raise ValueError(f"{demo_dir}: the {split!r} split has no clips")
    clips = []
    for row in rows:
        audio, rate = load_audio(paths.join(demo_dir, row["path"]), sample_rate, channels)
        clips.append(Clip(row["path"], row["caption"], row["instrument"], int(row["bpm"]), audio, int(rate)))
    return clips


def features_of(audio: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
    """Per clip its segment features (``classifier.clip_features``)."""
    return [clip_features(a, sample_rate) for a in audio]


# ------------------------------------------------------------------------------------------------ classifier


def train_classifier(demo_dir: str | os.PathLike, min_accuracy: float = MIN_CLASSIFIER_ACCURACY, seed: int = 0,
                     sample_rate: int | None = None, channels: int | None = None, kind: str = "mlp"):
    """A ``kind`` judge (``JUDGES``) fitted on the train split and validated on valid + test (pieces it never saw),
    all in the given audio format; below ``min_accuracy`` it is not fit to judge anything and the error says so."""
    train = load_split(demo_dir, "train", None, sample_rate, channels)
    judge = JUDGES[kind].fit_audio([c.audio for c in train], train[0].sample_rate, [c.instrument for c in train],
                                   seed)
    report = validate_classifier(judge, demo_dir, min_accuracy, sample_rate, channels)
    return judge, {"train_clips": len(train), **report}


def validate_classifier(classifier, demo_dir: str | os.PathLike, min_accuracy: float = MIN_CLASSIFIER_ACCURACY,
                        sample_rate: int | None = None, channels: int | None = None, source: str = "") -> dict:
    """A judge's accuracy and per-instrument confusion on the valid + test renders of ``demo_dir`` (real audio of
    pieces the train split never had). Run on every judge before it judges anything, trained here or loaded
    (``source``: the file it came from): a judge below ``min_accuracy`` is refused."""
    held_out = load_split(demo_dir, "valid", None, sample_rate, channels) + load_split(demo_dir, "test", None,
                                                                                     sample_rate, channels)
    where = f"{source}: " if source else ""
    unknown = sorted({c.instrument for c in held_out} - set(classifier.labels))
    if unknown:
        raise ValueError(f"{where}the {classifier.kind} instrument judge knows {classifier.labels}; "
                         f"{os.fspath(demo_dir)} also has {unknown}: train it on this data (leave out --classifier)")
    truth = [c.instrument for c in held_out]
    predicted = classifier.predict_audio([c.audio for c in held_out], held_out[0].sample_rate)
    accuracy = float(np.mean([a == b for a, b in zip(predicted, truth)]))
    confusion = {t: {p: sum(1 for a, b in zip(truth, predicted) if (a, b) == (t, p)) for p in classifier.labels}
                 for t in sorted(set(truth))}
    if accuracy < min_accuracy:
        raise ValueError(f"{where}the {classifier.kind} instrument judge reaches {accuracy:.1%} on {len(held_out)} "
                         f"held-out renders of {os.fspath(demo_dir)}, below the {min_accuracy:.0%} needed to judge "
                         "generations; give it more clips (`stableaudio-jax demo-data --clips`)")
    return {"kind": classifier.kind, "judge": classifier.description, "held_out_clips": len(held_out),
            "held_out_accuracy": accuracy, "confusion": confusion,
            "instruments": classifier.labels, "sample_rate": held_out[0].sample_rate}


# ----------------------------------------------------------------------------------------------- autoencoder


def reconstruct(vae, clips: Sequence[Clip]) -> list[np.ndarray]:
    """Each clip through the VAE (posterior mean → decode), cut back to its length. Every clip is zero-padded to
    the longest (a multiple of the downsampling ratio): one compiled shape for clips of any length."""
    import jax
    import jax.numpy as jnp
    ratio = vae.module.downsampling_ratio
    run = jax.jit(lambda p, a: vae.module.apply(p, vae.module.apply(p, a, method=type(vae.module).encode),
                                                method=type(vae.module).decode))
    longest = max(clip.audio.shape[0] for clip in clips)
    padded_length = longest + (-longest % ratio)
    out = []
    for clip in clips:
        length = clip.audio.shape[0]
        padded = np.pad(clip.audio, ((0, padded_length - length), (0, 0)))
        out.append(np.asarray(run(vae.params, jnp.asarray(padded[None])))[0, :length].astype(np.float32))
    return out


def autoencoder_metrics(reconstructions: Sequence[np.ndarray], clips: Sequence[Clip]) -> dict:
    """Per clip, then summarised (mean and 95 % interval): SI-SDR (dB), STFT and mel distance, as auraloss defines
    them (``audio.metrics``), at the model's sample rate."""
    rows = [{"si_sdr_db": metrics.si_sdr(r, c.audio), "stft_distance": metrics.stft_distance(r, c.audio),
             "mel_distance": metrics.mel_distance(r, c.audio, c.sample_rate)} for r, c in zip(reconstructions, clips)]
    return summarize(rows)


# ------------------------------------------------------------------------------------------------ generation


def generate_for(pipe, clips: Sequence[Clip], steps: int, seed: int, batch: int = 8,
                 progress: str | None = None, cfg_scale: float | None = None) -> list[np.ndarray]:
    """One generation per held-out caption, asked for (and cut to) the length of its clip (the model's own
    sampler). Every call gets ``batch`` prompts (the last batch repeats its last clip): one compiled sampler.
    ``progress``: a progress bar over the batches with that name. ``cfg_scale``: None is the model's own."""
    from tqdm import tqdm
    out, batch = [], min(batch, len(clips))
    starts = range(0, len(clips), batch)
    for start in tqdm(starts, desc=progress, unit="batch", disable=progress is None):
        part = clips[start:start + batch]
        part = part + [part[-1]] * (batch - len(part))
        seconds = [min(c.audio.shape[0] / c.sample_rate, pipe.window_seconds) for c in part]
        audio = pipe.generate([c.caption for c in part], seconds_total=seconds, steps=steps, seed=seed + start,
                              cfg_scale=cfg_scale)
        out.extend(np.asarray(a)[:round(s * pipe.sample_rate)] for a, s in zip(audio, seconds))
    return out[:len(clips)]


def adherence_metrics(generated: Sequence[np.ndarray], clips: Sequence[Clip], judges: dict,
                      real_embeddings: np.ndarray, sample_rate: int) -> dict:
    """Instrument accuracy (both judges must name the prompt's instrument; each judge's own accuracy beside it) and
    tempo error per clip, summarised; the Fréchet distance of the set in the first judge's embedding, with an
    interval from resampling the generated clips (FD grows when clips repeat, so a row's interval sits above its
    point estimate: compare rows' intervals with each other, all from the same number of clips)."""
    features = {kind: [judge.features(a, sample_rate) for a in generated] for kind, judge in judges.items()}
    said = {kind: judge.predict(features[kind]) for kind, judge in judges.items()}
    rows = []
    for i, (audio, clip) in enumerate(zip(generated, clips)):
        right = {kind: float(names[i] == clip.instrument) for kind, names in said.items()}
        tempo = metrics.tempo_error(audio, sample_rate, clip.bpm)
        rows.append({"instrument_accuracy": min(right.values()),
                     **{f"instrument_accuracy_{kind}": value for kind, value in right.items()},
                     "tempo_relative_error": tempo["relative_error"],
                     "tempo_within_8_percent": float(tempo["within_8_percent"])})
    embedded = judges["mlp"].embed(features["mlp"])  # the features it judged by: computed once
    distance = lambda rows_: metrics.frechet_distance(rows_, real_embeddings)  # noqa: E731
    return summarize(rows) | {"frechet_distance": distance(embedded),
                              "frechet_distance_ci95": metrics.bootstrap_interval(embedded, distance, resamples=200)}


def timing_metrics(pipe, clips: Sequence[Clip], steps: int, seed: int, prompts: int = 48, batch: int = 8) -> dict:
    """``prompts`` generations (the held-out captions in turn) asked for lengths spread evenly from 20 % to 80 % of
    the window: per clip the energy after ``seconds_total`` against before it, on the whole decoded window (the
    pipeline's own cut is not applied), and whether the sound's detected end (``metrics.detected_end``) is within
    0.25 s of the request. Every call gets ``batch`` prompts (at most one per clip, as ``generate_for``: the same
    compiled sampler)."""
    window, batch = pipe.window_seconds, min(batch, len(clips))
    asked = [window * (0.2 + 0.6 * i / max(prompts - 1, 1)) for i in range(prompts)]
    captions = [clips[i % len(clips)].caption for i in range(prompts)]
    rows = []
    for start in range(0, prompts, batch):
        part = list(range(start, min(start + batch, prompts)))
        part += [part[-1]] * (batch - len(part))
        _, latents = pipe.generate([captions[i] for i in part], seconds_total=[asked[i] for i in part], steps=steps,
                                   seed=seed + start, return_latents=True)
        for i, audio in list(zip(part, pipe.decode(latents)))[:min(batch, prompts - start)]:
            end = metrics.detected_end(audio, pipe.sample_rate)
            rows.append({"tail_energy_db": metrics.tail_energy_db(audio, pipe.sample_rate, asked[i]),
                         "end_within_0_25_s": float(abs(end - asked[i]) <= 0.25),
                         "end_error_seconds": abs(end - asked[i])})
    return summarize(rows) | {"seconds_total": [min(asked), max(asked)], "window_seconds": window}


def real_reference(clips: Sequence[Clip], others: Sequence[Clip], judges: dict) -> dict:
    """The same adherence numbers for real held-out audio: the ceiling (and the beat tracker's own error)."""
    rate = clips[0].sample_rate
    return adherence_metrics([c.audio for c in clips], clips, judges,
                             judges["mlp"].embed(features_of([c.audio for c in others], rate)), rate)


def summarize(rows: Sequence[dict]) -> dict:
    """Each per-clip quantity's mean and its 95 % bootstrap interval over the clips (``<name>_ci95``: None below two
    clips), and the number of clips."""
    out: dict[str, Any] = {"clips": len(rows)}
    for key in rows[0] if rows else ():
        values = np.asarray([row[key] for row in rows], np.float64)
        out[key], out[f"{key}_ci95"] = float(values.mean()), metrics.bootstrap_interval(values)
    return out


# -------------------------------------------------------------------------------------------------- report


def write_report(result: dict[str, Any], out_dir: str | os.PathLike) -> tuple[str, str]:
    """``evaluation.json`` and ``evaluation.md`` (a table per section: the model against its reference points)."""
    out_dir = paths.absolute(out_dir)
    paths.makedirs(out_dir)
    json_path, md_path = paths.join(out_dir, "evaluation.json"), paths.join(out_dir, "evaluation.md")
    paths.write_json_atomic(json_path, result, indent=1, sort_keys=True)
    lines = [f"# Evaluation of {result.get('model') or result.get('vae')}", ""]
    for section, rows in result.get("sections", {}).items():
        columns = sorted({k for row in rows.values() for k in row if not k.endswith("_ci95")})
        lines += [f"## {section}", "", "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for name, row in rows.items():
            lines.append(f"| {name} | " + " | ".join(_cell(row.get(c), row.get(f"{c}_ci95")) for c in columns)
                         + " |")
        lines.append("")
    lines += [f"- {note}" for note in result.get("notes", [])]
    paths.write_text_atomic(md_path, "\n".join(lines) + "\n")
    return json_path, md_path


def _cell(value, interval=None) -> str:
    """A mean with its 95 % interval as ``0.81 [0.72, 0.88]``; a [low, high] range as ``0.1–0.4``."""
    if value is None:
        return "n/a"
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]:.3g}–{value[1]:.3g}"
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    return f"{text} [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else text
