"""The ``stableaudio-jax`` command line.

One sub-command per module of ``stableaudio_jax/commands`` (docs/design.md §4 lists them).
Config overrides use ``--config.a.b=value`` anywhere on the command line.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Sequence

from stableaudio_jax import __version__

# The sub-commands' modules (and through them jax, flax, the store) are imported inside the functions below, not
# here: `stableaudio-jax --version` answers before any of them is imported, in a fraction of a second.


def _show_config(args: argparse.Namespace, overrides: list[str]) -> int:
    from stableaudio_jax.config_loader import load_config
    config = load_config(args.config, overrides)
    print(config.to_json_best_effort(indent=2, sort_keys=True))
    if args.params:
        from stableaudio_jax.store import count_parameters
        counts = count_parameters(config)
        for part, n in counts.items():
            print(f"parameters ({part}): {n:,}")
        if len(counts) > 1:
            print(f"parameters (total): {sum(counts.values()):,}")
    return 0


# Every argument that names a file or folder: each may be a local path or a URL (gs://...). A URL is checked
# before the command starts (package for its scheme, credentials, bucket), so a typo in a bucket name fails in a
# second with the argument's name, not after a compile, deep inside a storage client.
_PATH_ARGS = {"audio", "captions", "checkpoint", "classifier", "data", "denoiser", "init_audio", "inpaint_audio",
              "markdown", "model", "model_config", "out", "output", "plot", "spectrogram", "t5", "text_encoder", "vae",
              "workdir"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _check_urls(args: argparse.Namespace) -> None:
    from stableaudio_jax import paths
    for name, value in vars(args).items():
        for item in (value if isinstance(value, (list, tuple)) else [value]) if name in _PATH_ARGS else []:
            if isinstance(item, str) and _URL.match(item):
                paths.check_access(item, f"--{name.replace('_', '-')}")


def build_parser() -> argparse.ArgumentParser:
    from stableaudio_jax.commands import (bench, convert, demo_data, encode, evaluate, export, generate, ingest,
                                          quickstart, train, train_arc, train_vae)
    parser = argparse.ArgumentParser(
        prog="stableaudio-jax",
        description="Stable Audio latent diffusion in JAX/Flax. Override any config value with "
                    "--config.a.b=value.")
    parser.add_argument("--version", action="version", version=version_line(),
                        help="print the installed version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    quickstart.add_parser(sub)

    show = sub.add_parser("show-config", help="print a resolved config (file:variant + overrides)",
                          description="Print a config after its variant and --config.* overrides are applied.")
    show.add_argument("config", help="config file and variant, e.g. configs/vae.py:sao")
    show.add_argument("--params", action="store_true", help="also print the model's parameter count")
    show.set_defaults(run=_show_config)
    demo_data.add_parser(sub)
    generate.add_parser(sub)
    convert.add_parser(sub)
    ingest.add_parser(sub)
    train_vae.add_parser(sub)
    encode.add_parser(sub)
    train.add_parser(sub)
    train_arc.add_parser(sub)
    export.add_parser(sub)
    evaluate.add_parser(sub)
    bench.add_parser(sub)
    return parser


def version_line() -> str:
    return f"stableaudio-jax {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # before the sub-commands (and jax) are imported: installs are checked with this
        print(version_line())
        return 0
    from stableaudio_jax.config_loader import split_override_args
    from stableaudio_jax.paths import StoragePathError
    from stableaudio_jax.store.format import StoreError
    try:
        overrides, rest = split_override_args(argv)
    except ValueError as e:
        print(f"stableaudio-jax: error: {e}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(rest)
    try:
        _check_urls(args)
        return args.run(args, overrides)
    except (ValueError, KeyError, FileNotFoundError, StoreError, FloatingPointError, StoragePathError) as e:
        print(f"stableaudio-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
