"""``stableaudio-jax demo-data``: build the offline demo music data set (music21 scores rendered with a soundfont)."""
from __future__ import annotations

import argparse

from stableaudio_jax.commands import add_out_argument


def add_parser(sub) -> None:
    from stableaudio_jax.data.demo_music import INSTRUMENTS
    p = sub.add_parser(
        "demo-data", help="make a captioned music data set offline (music21 scores, General MIDI soundfont)",
        description="Arrange public-domain scores from the music21 corpus for General MIDI instruments (tempo, "
                    "transposition and register varied), render them with pretty_midi's TimGM6mb soundfont, and "
                    "write 44.1 kHz stereo clips with captions, split by piece into OUT/train, valid and test "
                    "(each feeds `stableaudio-jax ingest --audio OUT/train` unchanged). Deterministic for a seed.")
    add_out_argument(p, "folder to create", required=True)
    p.add_argument("--clips", type=int, default=240, help="number of clips (10%% valid, 10%% test; default 240)")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per clip (default 5)")
    p.add_argument("--min-seconds", type=float, help="clip lengths drawn from [--min-seconds, --seconds] (clips "
                                                      "shorter than a model's window teach it where audio ends)")
    p.add_argument("--instruments", default=",".join(INSTRUMENTS),
                   help=f"comma-separated subset of {', '.join(INSTRUMENTS)} (default: all)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the arrangement choices: the same seed, the same data set (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo data set in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs and CI)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from stableaudio_jax.data.demo_data import REPORT_FILE, build_demo_data

    if overrides:
        raise ValueError(f"demo-data takes no --config overrides; got {' '.join(overrides)}")
    instruments = [name.strip() for name in args.instruments.split(",") if name.strip()]
    report = build_demo_data(args.out, clips=args.clips, seconds=args.seconds, instruments=instruments,
                             seed=args.seed, overwrite=args.overwrite, progress=not args.no_progress,
                             min_seconds=args.min_seconds)
    splits = ", ".join(f"{k} {v}" for k, v in report["per_split"].items())
    lengths = f"{args.seconds:g} s" if args.min_seconds is None else f"{args.min_seconds:g}-{args.seconds:g} s"
    print(f"wrote {report['clips']} clips of {lengths} ({splits}; {sum(report['pieces'].values())} pieces) "
          f"to {report['output_dir']}; {len(report['skipped'])} skipped. Details in {REPORT_FILE}.")
    return 0
