"""``stableaudio-jax evaluate``: autoencoder, prompt-adherence and timing numbers, against reference points."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="measure a model on held-out demo data: reconstruction, prompt adherence, timing",
        description="Evaluate a stored text-to-audio model (or a VAE alone) on a held-out split of a `demo-data` "
                    "folder: VAE reconstruction (SI-SDR, multi-resolution STFT and mel distances), prompt adherence "
                    "(instrument accuracy: both of two judges validated at >= 95% on held-out renders must agree; "
                    "tempo error, Fréchet distance in the first judge's embedding) and timing control (energy after "
                    "seconds_total, detected end within 0.25 s), each beside real held-out audio and untrained "
                    "models, each a mean with its 95% bootstrap interval. Writes evaluation.json and "
                    "evaluation.md.")
    p.add_argument("--model", help="a stored text-to-audio model (train / convert / export)")
    p.add_argument("--vae", help="a stored VAE, to evaluate the autoencoder alone")
    p.add_argument("--data", required=True, help="a `stableaudio-jax demo-data` folder")
    p.add_argument("--split", default="test", choices=("valid", "test"), help="held-out split (default test)")
    p.add_argument("--clips", type=int, default=16, help="held-out clips to use (default 16)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    p.add_argument("--timing-prompts", type=int, default=48,
                   help="generations for timing control, asked for lengths spread over the window (default 48)")
    p.add_argument("--classifier", help="the instrument judges' files: the MLP judge's .npz (the linear judge's "
                                        "beside it, NAME_linear.npz), each loaded if it exists, else trained on "
                                        "--data's train split and saved there; either way validated on --data's "
                                        "held-out renders first (accuracy and confusion in the report; below 95%% "
                                        "it is refused)")
    p.add_argument("--out", default="evaluation", help="output folder (default ./evaluation)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the generations and the untrained baselines (default 0)")
    p.add_argument("--no-baselines", action="store_true", help="skip the untrained reference models")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs and CI)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from stableaudio_jax.commands import setup_logging
    from stableaudio_jax.evaluation.run import run_evaluation

    if overrides:
        raise ValueError(f"evaluate takes no --config overrides; got {' '.join(overrides)}")
    if args.clips < 2:
        raise ValueError(f"--clips {args.clips}; expected >= 2 (Fréchet distances need two clips)")
    if args.timing_prompts < 2:
        raise ValueError(f"--timing-prompts {args.timing_prompts}; expected >= 2 (lengths spread over the window)")
    setup_logging()
    result = run_evaluation(args.data, args.out, model=args.model, vae=args.vae, split=args.split,
                            clips=args.clips, steps=args.steps, classifier=args.classifier, seed=args.seed,
                            timing_prompts=args.timing_prompts,
                            baselines=not args.no_baselines, progress=not args.no_progress)
    from stableaudio_jax import paths
    print(paths.read_text(result["files"]["markdown"]))
    print(f"wrote {result['files']['json']} and {result['files']['markdown']} ({result['seconds']:.0f} s)")
    return 0
