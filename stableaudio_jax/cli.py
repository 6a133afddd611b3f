"""The ``stableaudio-jax`` command line.

Sub-commands are added here as the capabilities they drive land (see DESIGN.md §4 for the planned set).
Config overrides use ``--config.a.b=value`` anywhere on the command line.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from stableaudio_jax.commands import convert, encode, generate, ingest, train, train_vae
from stableaudio_jax.training.checkpoints import CheckpointError
from stableaudio_jax.config_loader import load_config, split_override_args


def _show_config(args: argparse.Namespace, overrides: list[str]) -> int:
    config = load_config(args.config, overrides)
    print(config.to_json_best_effort(indent=2, sort_keys=True))
    if args.params:
        print(f"parameters: {model_parameter_count(config):,}")
    return 0


def model_parameter_count(config) -> int:
    """Parameters of ``config.model``, computed abstractly (``jax.eval_shape``: nothing is allocated)."""
    import jax
    import jax.numpy as jnp

    from stableaudio_jax.models.autoencoder import count_params, vae_from_config

    if config.model.get("type") != "oobleck_vae":
        raise ValueError(f"config.model.type {config.model.get('type')!r}: parameter counting supports "
                         "'oobleck_vae'")
    vae = vae_from_config(config.model)
    audio = jax.ShapeDtypeStruct((1, vae.downsampling_ratio, vae.audio_channels), jnp.float32)
    return count_params(jax.eval_shape(lambda a: vae.init(jax.random.key(0), a, sample=False), audio))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stableaudio-jax",
        description="Stable Audio latent diffusion in JAX/Flax. Override any config value with "
                    "--config.a.b=value.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    show = sub.add_parser("show-config", help="print a resolved config (file:variant + overrides)",
                          description="Print a config after its variant and --config.* overrides are applied.")
    show.add_argument("config", help="config file and variant, e.g. configs/vae.py:sao")
    show.add_argument("--params", action="store_true", help="also print the model's parameter count")
    show.set_defaults(run=_show_config)
    generate.add_parser(sub)
    convert.add_parser(sub)
    ingest.add_parser(sub)
    train_vae.add_parser(sub)
    encode.add_parser(sub)
    train.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        overrides, rest = split_override_args(argv)
    except ValueError as e:
        print(f"stableaudio-jax: error: {e}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(rest)
    try:
        return args.run(args, overrides)
    except (ValueError, KeyError, FileNotFoundError, CheckpointError, FloatingPointError) as e:
        print(f"stableaudio-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
