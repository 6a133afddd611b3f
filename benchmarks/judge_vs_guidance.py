"""Why generated clips can be judged right more often than real audio through the VAE: both instrument judges'
accuracy and confidence on the held-out captions' generations at several guidance scales, beside the real clips
and their VAE reconstructions, in one run with the same judges.

  python benchmarks/judge_vs_guidance.py --workdir runs/quick --cfg 1,3,5,7 \\
      --out docs/results/judge_vs_guidance_cpu.json

The workdir is a finished ``quickstart`` run: its demo data, its exported DiT (``dit/model``, whose VAE
reconstructs) and its judges (``evaluation/classifier.npz`` and ``classifier_linear.npz``, validated here on the
held-out renders as ``evaluate`` does). Per row and judge: accuracy (the judge names the caption's instrument),
confidence (the mean over clips of the log-probability the judge gives the caption's instrument) and margin (that
log-probability minus the best other instrument's), each with a 95 % bootstrap interval over clips; ``both``: the
fraction of clips both judges name right; ``margin_over_vae_reconstruction``: per caption, the generation's margin
minus its real clip's reconstruction's, with an interval over clips (a paired comparison). Guidance pushes a sample
towards what the text conditioning makes most likely; if it explains the gap, accuracy and confidence grow with the
scale and at scale 1 (no guidance) fall below the VAE reconstructions'.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, write_report  # noqa: E402


def judged(judges: dict, audio: list, labels: list[str], rate: int) -> dict:
    """Per judge: accuracy, confidence and margin with intervals; ``both``: both judges right."""
    from stableaudio_jax.audio.metrics import bootstrap_interval
    out, right_by_judge = {}, []
    for kind, judge in judges.items():
        logp = judge.log_probabilities([judge.features(a, rate) for a in audio])
        index = np.array([judge.labels.index(label) for label in labels])
        own = logp[np.arange(len(labels)), index]
        others = np.where(np.eye(logp.shape[1], dtype=bool)[index], -np.inf, logp).max(axis=1)
        right = (logp.argmax(axis=1) == index).astype(np.float64)
        right_by_judge.append(right)
        out[kind] = {name: {"mean": float(np.mean(v)), "ci95": bootstrap_interval(v), "per_clip": v.tolist()}
                     for name, v in (("accuracy", right), ("confidence", own), ("margin", own - others))}
    both = np.min(right_by_judge, axis=0)
    out["both"] = {"accuracy": {"mean": float(np.mean(both)), "ci95": bootstrap_interval(both)}}
    return out


def paired_difference(ours: list[float], theirs: list[float]) -> dict:
    """Per clip ``ours - theirs`` (the same caption's generation against its real clip's reconstruction): mean and
    95 % bootstrap interval, tighter than comparing the two rows' intervals."""
    from stableaudio_jax.audio.metrics import bootstrap_interval
    difference = np.asarray(ours) - np.asarray(theirs)
    return {"mean": float(np.mean(difference)), "ci95": bootstrap_interval(difference)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a finished quickstart workdir")
    parser.add_argument("--cfg", default="1,3,5,7", help="guidance scales, comma-separated")
    parser.add_argument("--clips", type=int, default=None, help="held-out clips (default: the whole test split)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="the JSON report's path")
    args = parser.parse_args()
    from stableaudio_jax.evaluation import evaluate as E
    from stableaudio_jax.evaluation.run import _judges
    from stableaudio_jax.inference.pipeline import TextToAudioPipeline
    from stableaudio_jax.store import load_vae
    demo, model = os.path.join(args.workdir, "demo_data"), os.path.join(args.workdir, "dit", "model")
    pipe = TextToAudioPipeline.from_checkpoint(model)
    rate, channels = pipe.sample_rate, pipe.audio_channels
    notes: list[str] = []
    judges, reports = _judges(os.path.join(args.workdir, "evaluation", "classifier.npz"), demo, notes, rate, channels)
    held = E.load_split(demo, "test", args.clips, rate, channels)
    labels = [c.instrument for c in held]
    steps = args.steps or int(pipe.config.sampling.steps)
    rows = {"real held-out audio": judged(judges, [c.audio for c in held], labels, rate),
            "real audio through the VAE": judged(judges, E.reconstruct(load_vae(model), held), labels, rate)}
    for scale in (float(s) for s in args.cfg.split(",")):
        generated = E.generate_for(pipe, held, steps, args.seed, progress=f"generate (cfg {scale:g})",
                                   cfg_scale=scale)
        rows[f"generated, cfg {scale:g}"] = judged(judges, generated, labels, rate)
    against = rows["real audio through the VAE"]
    paired = {name: {kind: paired_difference(row[kind]["margin"]["per_clip"], against[kind]["margin"]["per_clip"])
                     for kind in judges}
              for name, row in rows.items() if name.startswith("generated")}
    report = {"benchmark": "judge_vs_guidance", **environment(with_torch=False), "workdir": args.workdir,
              "clips": len(held), "sampling_steps": steps, "model_cfg_scale": float(pipe.config.sampling.cfg_scale),
              "seed": args.seed, "judges": reports, "notes": notes, "rows": rows,
              "margin_over_vae_reconstruction": paired}
    write_report(report, args.out)


if __name__ == "__main__":
    main()
