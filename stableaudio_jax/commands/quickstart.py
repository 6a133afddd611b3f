"""``stableaudio-jax quickstart``: the main job on data the package builds offline, in one command, resumable.

  1 demo-data      captioned music clips (music21 scores, a General MIDI soundfont), split by piece
  2 text encoder   a sentencepiece vocabulary of the captions + a small frozen T5 (random weights), stored
  3 ingest         the train split → an audio dataset
  4 train-vae      the VAE on it (exports <workdir>/vae/model)
  5 encode         latents + text embeddings + timing
  6 train          the DiT (or --denoiser unet) on the latents (exports <workdir>/<denoiser>/model)
  7 generate       held-out captions → wav + spectrogram PNGs in <workdir>/samples/<denoiser>
  8 evaluate       reconstruction, prompt adherence, timing, against real audio and untrained models

A stage whose output is complete is skipped when the command runs again; the training stages resume from their
checkpoints. A training stage stopped by SIGINT/SIGTERM (or a preemption notice) saves a checkpoint and ends the
command with exit status 75, later stages not run. Presets (configs/quickstart.py): cpu (default), cpu-long, gpu, tpu, ci.
"""
from __future__ import annotations

import argparse
import logging
import os
import time

from stableaudio_jax import paths as storage  # (``paths`` below is the run's Paths)

logger = logging.getLogger(__name__)
EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped by a signal with its work saved; the same command resumes
STAGES = ("demo-data", "text encoder", "ingest", "train-vae", "encode", "train", "generate", "evaluate")


def add_parser(sub) -> None:
    p = sub.add_parser("quickstart", help="the whole job on built-in demo data: data → VAE → denoiser → audio",
                       description=__doc__.split("\n\n")[0] + " Prints where the audio, pictures and numbers are.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--workdir", required=True, help="everything goes here; re-run the same command to resume")
    p.add_argument("--preset", default="cpu", choices=("cpu", "cpu-long", "gpu", "tpu", "ci"),
                   help="model and data sizes (configs/quickstart.py); default cpu (~15 min on 2 cores); cpu-long "
                        "(~3 h on 2 cores, an estimate; stop and rerun to resume)")
    p.add_argument("--denoiser", default="dit", choices=("dit", "unet"), help="DiT (Stable Audio Open) or the 1-D "
                                                                              "U-Net (Stable Audio 1.0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs and CI)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from stableaudio_jax.commands import setup_logging
    from stableaudio_jax.commands.quickstart_stages import StoppedEarly
    from stableaudio_jax.config_loader import load_config

    setup_logging()
    config = load_config(f"quickstart.py:{args.preset}", overrides)
    workdir = storage.absolute(args.workdir)
    storage.makedirs(workdir)
    _check_preset(workdir, args.preset)
    paths = Paths(workdir, args.denoiser)
    timings, record = {}, os.path.join(workdir, "quickstart.json")
    invocation = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for number, (name, stage) in enumerate(zip(STAGES, _stage_functions()), 1):
        started = time.time()
        logger.info("quickstart stage %d/%d: %s", number, len(STAGES), name)
        try:
            stage(config, paths, args.denoiser, not args.no_progress)
        except StoppedEarly as stopped:
            timings[name] = round(time.time() - started, 1)
            _record(record, args.preset, args.denoiser, invocation, timings, done=False)
            logger.warning("quickstart: %s", stopped)
            return EXIT_STOPPED
        timings[name] = round(time.time() - started, 1)
        # written as each stage ends, so a run stopped part-way keeps the times of the stages it finished
        _record(record, args.preset, args.denoiser, invocation, timings, done=number == len(STAGES))
    print(summary(paths, timings))
    return 0


class Paths:
    def __init__(self, workdir: str, denoiser: str):
        self.workdir = workdir
        self.demo = os.path.join(workdir, "demo_data")
        self.text_encoder = os.path.join(workdir, "text_encoder")
        self.audio = os.path.join(workdir, "audio")
        self.vae = os.path.join(workdir, "vae")
        self.latents = os.path.join(workdir, "latents")
        self.denoiser = os.path.join(workdir, denoiser)
        self.model = os.path.join(self.denoiser, "model")
        # per denoiser: a U-Net run after a DiT run in the same workdir gets its own samples and evaluation
        self.samples = os.path.join(workdir, "samples", denoiser)
        self.evaluation = os.path.join(workdir, "evaluation", denoiser)
        self.classifier = os.path.join(workdir, "evaluation", "classifier.npz")  # one judge for both


def _check_preset(workdir: str, preset: str) -> None:
    """A workdir keeps the preset it was started with: resuming with another would mix two sizes."""
    path = storage.join(workdir, "quickstart_settings.json")
    settings = {"preset": preset}
    if storage.isfile(path):
        previous = storage.read_json(path)
        if previous.get("preset") != preset:
            raise ValueError(f"{workdir} was started with --preset {previous.get('preset')}; resume with it or use "
                             "another --workdir")
    else:
        _write_json(path, settings)


def _record(path: str, preset: str, denoiser: str, invocation: str, timings: dict, done: bool) -> None:
    """``quickstart.json``: the preset and, per denoiser run, the seconds of every stage of the last complete
    invocation (``stage_seconds``, in stage order; a rerun that finds everything done records its skips), and
    ``invocations``: every invocation's stage times, a stopped one's up to where it stopped. A run resumed after a
    stop spent the sum of its invocations' times."""
    record = {"preset": preset, "runs": {}}
    if storage.isfile(path):
        record = storage.read_json(path)
    run = record["runs"].setdefault(denoiser, {})
    history = [h for h in run.get("invocations", []) if h["started"] != invocation]
    run["invocations"] = history + [{"started": invocation, "stage_seconds": dict(timings), "finished": done}]
    if done:
        run.update(stage_seconds=dict(timings), total_seconds=round(sum(timings.values()), 1))
    _write_json(path, record)


def _write_json(path: str, value) -> None:
    storage.write_json_atomic(path, value, indent=1)  # stage order kept


def _stage_functions():
    from stableaudio_jax.commands import quickstart_stages as s
    return (s.demo_data, s.text_encoder, s.ingest, s.train_vae, s.encode, s.train, s.generate, s.evaluate)


def summary(paths: Paths, timings: dict) -> str:
    total = sum(timings.values())
    lines = [f"quickstart done in {total / 60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})",
             f"  audio + spectrograms: {paths.samples}",
             f"  evaluation:           {os.path.join(paths.evaluation, 'evaluation.md')}",
             f"  model:                {paths.model}  (stableaudio-jax generate --checkpoint {paths.model} \"...\")",
             f"  training curves:      {paths.vae}/metrics.jsonl, {paths.denoiser}/metrics.jsonl (TensorBoard: "
             f"{paths.workdir})"]
    return "\n".join(lines)
