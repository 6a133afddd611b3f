"""``stableaudio-jax ingest``: a folder of audio files + captions → a TFDS audio dataset (array_record)."""
from __future__ import annotations

import argparse

from stableaudio_jax.commands import add_out_argument


def add_parser(sub) -> None:
    p = sub.add_parser(
        "ingest", help="build an audio + caption dataset (TFDS, array_record) from a folder of audio files",
        description="Read every audio file under --audio (wav/flac/ogg/mp3/aiff/opus, any rate and channel count), "
                    "resample it to --sample-rate, match it to --channels (mono duplicated, extra channels "
                    "dropped) and write it with its caption to a TFDS dataset in --out. Captions come from "
                    "song.txt / song.json sidecars, or from one --captions manifest. Unreadable files are skipped "
                    "and listed in OUT/ingest_report.json.")
    p.add_argument("--audio", required=True, help="folder of audio files (searched recursively)")
    add_out_argument(p, "dataset folder to create", required=True)
    p.add_argument("--captions", help="manifest instead of sidecars: .csv with a header or .jsonl, with a "
                                      "'path' (or 'file') relative to --audio and a 'caption' (or 'text')")
    p.add_argument("--sidecar-key", default="caption",
                   help="caption key in .json sidecars (default: 'caption', which also accepts 'text')")
    p.add_argument("--default-caption", metavar="TEXT",
                   help="caption for files without one (default: such files are an error); may be ''")
    p.add_argument("--sample-rate", type=int, default=44100, help="target sample rate (default 44100)")
    p.add_argument("--channels", type=int, default=2, help="target channel count, 1..8 (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs and CI)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from stableaudio_jax.data.ingest import ingest

    if overrides:
        raise ValueError(f"ingest takes no --config overrides; got {' '.join(overrides)}")
    report = ingest(args.audio, args.out, captions=args.captions, sidecar_key=args.sidecar_key,
                    missing_caption="error" if args.default_caption is None else args.default_caption,
                    sample_rate=args.sample_rate, channels=args.channels, overwrite=args.overwrite,
                    progress=not args.no_progress)
    print(summary(report))
    return 0


def summary(report: dict) -> str:
    skipped = report["files_skipped"]
    text = (f"Wrote {report['files_written']} of {report['files_found']} audio files "
            f"({report['total_hours']:.3f} h at {report['sample_rate']} Hz, {report['channels']} channels, "
            f"captions from {report['caption_source']}") + (
        f", {report['default_captions']} with the default caption" if report["default_captions"] else "")
    text += f") to {report['output_dir']}; {skipped} skipped"
    if skipped:
        text += " (" + "; ".join(f"{s['path']}: {s['reason']}" for s in report["skipped"][:5])
        text += "; ..." if skipped > 5 else ""
        text += ")"
    return text + ". Details in ingest_report.json."
