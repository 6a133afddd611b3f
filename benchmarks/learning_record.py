"""The learning record of a quickstart run: curves, metrics against training steps, examples, one JSON.

  python benchmarks/learning_record.py --workdir runs/quick --out docs/learning \\
      --results docs/results/learning_cpu.json

For every denoiser trained in the workdir (``dit/``, ``unet/``) every kept checkpoint is exported and evaluated on
the held-out test split (the quickstart's judges, same clips, same seed), so the record shows what each stretch
of training bought; the final step also gets the reference rows (real held-out audio, untrained model). Where the
quickstart's own evaluation of the final model asked for exactly these settings, it is that step's row (read, not
rerun: the same computation). PNGs: the VAE's and the denoisers' loss curves, instrument accuracy and Fréchet
distance against steps (with 95 % intervals), and per instrument the spectrogram of a generated clip beside the
real clip of the same held-out caption; the same examples as short wavs. Training times come from the runs'
``metrics.jsonl`` (pauses and stops taken out, and listed) and, with ``--log``, the stage times of each
invocation from the quickstart's saved output. The JSON also keeps every logged loss term against its step and
how much the VAE's latents move over time on held-out clips (a VAE whose latents stand still decodes every clip to
the same static sound).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, write_report  # noqa: E402
from learning_plots import plot_curves, plot_examples, plot_metrics  # noqa: E402

DENOISERS = ("dit", "unet")
# Published autoencoder figures to set beside ours (auraloss' multi-resolution STFT and MEL distances, SI-SDR in dB),
# as the Stable Audio Open paper reports them (Evans et al. 2024, Table 4, on Song Describer: another data set, at
# 44.1 kHz stereo), so that a table can be read from this one file.
PUBLISHED_AUTOENCODERS = {
    "Stable Audio Open VAE (published)": {"stft_distance": 1.29, "mel_distance": 0.77, "si_sdr_db": 6.28},
    "Stable Audio 1.0 VAE (published)": {"stft_distance": 1.19, "mel_distance": 0.67, "si_sdr_db": 8.62},
}


def checkpoint_steps(run_dir: str) -> list[int]:
    folder = os.path.join(run_dir, "checkpoints")
    return sorted(int(d) for d in os.listdir(folder) if d.isdigit()) if os.path.isdir(folder) else []


def chosen_steps(kept: list[int], only: list[int] | None) -> list[int]:
    """The kept checkpoints to evaluate: all of them by default, else those in ``only`` and always the last."""
    return [s for s in kept if only is None or s in only or s == kept[-1]]


def quickstart_evaluation(workdir: str, denoiser: str, asked: dict, seed: int) -> dict | None:
    """The quickstart's evaluation of its final model (``evaluation/<denoiser>/evaluation.json``) when it was run
    with the ``asked`` settings (clips, sampling steps, timing prompts, baselines, judges' file) and ``seed``."""
    path = os.path.join(workdir, "evaluation", denoiser, "evaluation.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    ran = dict(result.get("settings") or {})
    if ran.get("classifier"):
        ran["classifier"] = os.path.abspath(ran["classifier"])
    return result if ran == asked and result.get("seed") == seed else None


def evaluate_steps(workdir: str, denoiser: str, clips: int, steps: int, seed: int, timing_prompts: int = 48,
                   only: list[int] | None = None) -> tuple[list[dict], str]:
    """Rows per kept checkpoint (``only``: these steps and the last one) and where the last one's came from."""
    from stableaudio_jax.evaluation.run import run_evaluation
    from stableaudio_jax.training.diffusion_train import export_from_workdir
    run_dir = os.path.join(workdir, denoiser)
    classifier = os.path.join(workdir, "evaluation", "classifier.npz")  # the quickstart's, shared by denoisers
    kept = checkpoint_steps(run_dir)
    asked = {"clips": clips, "steps": steps, "timing_prompts": timing_prompts, "baselines": True,
             "classifier": os.path.abspath(classifier)}
    reused = quickstart_evaluation(workdir, denoiser, asked, seed)
    rows, source = [], "evaluated here"
    for step in chosen_steps(kept, only):
        last = step == kept[-1]
        if last and reused is not None:
            result, source = reused, os.path.join(workdir, "evaluation", denoiser, "evaluation.json")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                model = export_from_workdir(run_dir, os.path.join(tmp, "model"), step)
                result = run_evaluation(os.path.join(workdir, "demo_data"), os.path.join(tmp, "eval"), model=model,
                                        clips=clips, steps=steps, classifier=classifier, seed=seed, baselines=last,
                                        timing_prompts=timing_prompts, progress=True)
        timing = result["sections"]["timing control"]["trained model"]
        rows.append({"step": step, **result["sections"]["prompt adherence"]["trained model"],
                     **{k: v for k, v in timing.items() if k.startswith(("tail_energy_db", "end_"))},
                     "final": result if last else None})
    return rows, source


def training_time(run_dir: str) -> dict | None:
    """A training run's time from its ``metrics.jsonl``: the median logged step time (and range), and the wall span
    from the first to the last logged step less the gaps (a pause, a stop and resume: an interval over 5x the
    median between two log lines), which are listed."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        rows = [r for r in map(json.loads, f) if "perf/step_time_s" in r]
    if len(rows) < 3:
        return None
    step_times = sorted(r["perf/step_time_s"] for r in rows)
    intervals = [b["time"] - a["time"] for a, b in zip(rows, rows[1:])]
    usual = float(np.median(intervals))
    gaps = [{"after_step": a["step"], "seconds": round(b["time"] - a["time"], 1)}
            for a, b in zip(rows, rows[1:]) if b["time"] - a["time"] > 5 * usual]
    span = rows[-1]["time"] - rows[0]["time"]
    return {"first_logged_step": rows[0]["step"], "last_logged_step": rows[-1]["step"],
            "median_step_seconds": round(step_times[len(step_times) // 2], 3),
            "step_seconds_range": [round(step_times[0], 3), round(step_times[-1], 3)],
            "span_seconds": round(span, 1), "gaps": gaps,
            "span_less_gaps_seconds": round(span - sum(g["seconds"] - usual for g in gaps), 1)}


def loss_curves(run_dir: str) -> dict:
    """Every logged ``train/*loss*`` term of a run (and a VAE's batch latent std) against its step:
    ``{term: [[step, value], ...]}``."""
    path = os.path.join(run_dir, "metrics.jsonl")
    curves: dict[str, list] = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for row in map(json.loads, f):
                for key, value in row.items():
                    if key.startswith("train/") and ("loss" in key or key == "train/latent_std"):
                        curves.setdefault(key[len("train/"):], []).append([row["step"], round(value, 5)])
    return curves


def latent_motion(workdir: str, clips: int = 24) -> dict:
    """How much the VAE's latents move over time on held-out clips: per clip, the std over frames (averaged over
    channels) against the std over all frames and channels. A VAE whose latents barely move in time decodes every
    clip to the same static sound."""
    import jax.numpy as jnp
    from stableaudio_jax.evaluation.evaluate import load_split
    from stableaudio_jax.models.chunked_vae import decoder_receptive_field, encoder_receptive_field
    from stableaudio_jax.store.models import load_vae
    vae = load_vae(os.path.join(workdir, "vae", "model"))
    module, ratio = vae.module, vae.module.downsampling_ratio
    held = load_split(os.path.join(workdir, "demo_data"), "test", clips, module.sample_rate, module.audio_channels)
    over_time, overall = [], []
    for clip in held:
        audio = clip.audio[: clip.audio.shape[0] // ratio * ratio][None]
        latents = np.asarray(module.apply(vae.params, jnp.asarray(audio), method="encode"))[0]
        over_time.append(float(latents.std(axis=0).mean()))
        overall.append(float(latents.std()))
    crop = json.load(open(os.path.join(workdir, "vae", "config.json")))["training"]["crop_samples"]
    return {"clips": len(held), "std_over_time": round(float(np.mean(over_time)), 4),
            "std_overall": round(float(np.mean(overall)), 4),
            "ratio": round(float(np.mean(np.array(over_time) / np.array(overall))), 4),
            # what a training crop is to this VAE: its latent frames, and how far (an upper bound) a frame reaches
            "downsampling_ratio": ratio, "training_crop_frames": crop // ratio,
            "encoder_receptive_field_frames": encoder_receptive_field(module),
            "decoder_receptive_field_frames": decoder_receptive_field(module)}


def log_stages(log: str) -> list[dict]:
    """Per quickstart invocation in a log of its output, each stage's seconds from the timestamps of the "stage
    i/8" lines; a stage with no next stage in the same invocation (stopped, or the last) is ``None``."""
    pattern = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ INFO \S+: quickstart stage (\d+)/\d+: (.+)$")
    starts = []
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = pattern.match(line.rstrip("\n"))
            if m:
                starts.append((time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")), int(m[2]), m[3]))
    invocations = []
    for (t, number, name), following in zip(starts, starts[1:] + [None]):
        if number == 1:
            invocations.append({"started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)),
                                "stage_seconds": {}})
        ends_here = following is not None and following[1] == number + 1  # else stopped, or the last stage
        invocations[-1]["stage_seconds"][name] = round(following[0] - t, 1) if ends_here else None
    return invocations


def instrument_examples(workdir: str, denoiser: str, out: str, seconds: float, seed: int) -> list[dict]:
    """Per instrument, the first held-out caption: the final model's generation (its own sampler and guidance) and
    the real clip, both as wavs cut to ``seconds`` (16-bit, the model's rate) and as log-mel arrays for the plot."""
    from stableaudio_jax.audio.io import mel_spectrogram_db, write_audio
    from stableaudio_jax.evaluation.evaluate import generate_for, load_split
    from stableaudio_jax.inference.pipeline import TextToAudioPipeline
    pipe = TextToAudioPipeline.from_checkpoint(os.path.join(workdir, denoiser, "model"))
    held = load_split(os.path.join(workdir, "demo_data"), "test", None, pipe.sample_rate, pipe.audio_channels)
    firsts = list({c.instrument: c for c in reversed(held)}.values())[::-1]  # first clip of each instrument
    generated = generate_for(pipe, firsts, int(pipe.config.sampling.steps), seed)
    examples, keep = [], round(seconds * pipe.sample_rate)
    for clip, audio in zip(firsts, generated):
        entry = {"instrument": clip.instrument, "caption": clip.caption}
        for kind, sound in (("generated", audio), ("real", clip.audio)):
            path = write_audio(os.path.join(out, f"{denoiser}_{clip.instrument}_{kind}.wav"), sound[:keep],
                               pipe.sample_rate)
            entry[kind] = os.path.relpath(path)
            entry[f"{kind}_mel_db"] = mel_spectrogram_db(sound, pipe.sample_rate, 64)
        examples.append(entry)
    return examples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a finished `stableaudio-jax quickstart` workdir")
    parser.add_argument("--out", required=True, help="folder for the PNGs and example wavs")
    parser.add_argument("--results", help="JSON file for the numbers")
    parser.add_argument("--clips", type=int, default=12, help="held-out test clips per evaluation")
    parser.add_argument("--steps", type=int, default=50, help="sampling steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-prompts", type=int, default=48,
                        help="timing-control generations per checkpoint, lengths spread over the window")
    parser.add_argument("--checkpoints", type=lambda s: [int(x) for x in s.split(",")],
                        help="comma-separated training steps to evaluate (the last kept one always is); "
                             "default: every kept checkpoint")
    parser.add_argument("--example-seconds", type=float, default=2.0, help="length of the example wavs")
    parser.add_argument("--log", help="the quickstart's saved output (stderr included): stage times per invocation "
                                      "of a run that was stopped and resumed")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    denoisers = [d for d in DENOISERS if checkpoint_steps(os.path.join(args.workdir, d))]
    records, sources = {}, {}
    for d in denoisers:
        records[d], sources[d] = evaluate_steps(args.workdir, d, args.clips, args.steps, args.seed,
                                                args.timing_prompts, args.checkpoints)
    examples = {d: instrument_examples(args.workdir, d, args.out, args.example_seconds, args.seed) for d in denoisers}
    settings = json.load(open(os.path.join(args.workdir, "quickstart.json")))
    final = {d: rows[-1]["final"] for d, rows in records.items()}
    report = {"benchmark": "learning_record", **environment(False), "workdir": os.path.abspath(args.workdir),
              "quickstart": settings, "log_stages": log_stages(args.log) if args.log else None,
              "training_time": {part: training_time(os.path.join(args.workdir, part))
                                for part in ("vae", *denoisers)},
              "loss_curves": {part: loss_curves(os.path.join(args.workdir, part)) for part in ("vae", *denoisers)},
              "latent_motion": latent_motion(args.workdir),
              "clips": args.clips, "sampling_steps": args.steps,
              "timing_prompts": args.timing_prompts, "final_source": sources,
              "judges": final[denoisers[0]].get("judges"),
              "vae_final": final[denoisers[0]]["sections"]["autoencoder reconstruction"],
              "published_autoencoders": {"source": "Stable Audio Open paper (Evans et al. 2024), Table 4, Song "
                                                   "Describer", **PUBLISHED_AUTOENCODERS},
              "denoisers": {d: [{k: v for k, v in r.items() if k != "final"} for r in rows]
                            for d, rows in records.items()},
              "final": {d: result["sections"] for d, result in final.items()},
              "examples": {d: [{k: v for k, v in e.items() if not k.endswith("_mel_db")} for e in rows]
                           for d, rows in examples.items()},
              "plots": [plot_curves(args.workdir, denoisers, args.out), plot_metrics(records, args.out),
                        plot_examples(examples, args.out)]}
    write_report(report, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
