"""The CLI's sub-commands: each module has ``add_parser(subparsers)`` and ``run(args, overrides) -> exit code``."""
import argparse
import logging
import sys


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the stream it was when the handler was
    made: a caller that swaps stderr (pytest's capture, a notebook's redirect) and closes the old one would
    otherwise leave the root logger writing to a closed file."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def setup_logging() -> None:
    """INFO logs with timestamps for the long-running commands; orbax's per-save INFO lines and jax's backend
    probing ("Unable to initialize backend 'tpu'" on every non-TPU machine) and fsspec's line per opened bucket
    file are silenced."""
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for noisy in ("absl", "jax", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _OutOrOutput(argparse.Action):
    """``--out`` (every command's output path); ``--output``, the old spelling of ``ingest``, ``encode`` and
    ``demo-data``, is still accepted with a note on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string == "--output":
            print(f"{parser.prog}: --output is deprecated and will be removed; use --out", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_out_argument(p, help: str, **kwargs) -> None:
    """The command's output path as ``--out`` (``--output`` accepted, deprecated)."""
    p.add_argument("--out", "--output", dest="out", action=_OutOrOutput, metavar="OUT", help=help, **kwargs)


def add_training_args(p, default_config: str, config_example: str, data_help: str, workdir_help: str) -> None:
    """The arguments every resumable trainer takes."""
    p.add_argument("--config", default=default_config, help=f"config file:variant (e.g. {config_example})")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--workdir", required=True, help=workdir_help)
    p.add_argument("--max-steps", type=int, help="stop after this many more steps (default: config.training.steps)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs and CI)")
    p.add_argument("--init-from", metavar="MODEL",
                   help="start from a stored model's weights (exported by a run or converted from stable-audio-tools "
                        "/ diffusers) with its own model config and a fresh optimiser; --config overrides of its "
                        "sections apply on top (e.g. --config.diffusion.objective=rectified_flow) unless they change "
                        "shapes")
    p.add_argument("--force", action="store_true",
                   help="start even when the compiled step needs more memory per device than a device has (the "
                        "check before the first step; same as --config.training.check_memory=False)")
    p.add_argument("--profile", type=int, metavar="N",
                   help="capture a JAX profiler trace of N steps after the first (compiled) one into <workdir>/profile "
                        "(TensorBoard's profile tab, xprof or Perfetto); same as --config.training.profile_steps=N")


def training_overrides(args, overrides: list[str]) -> list[str]:
    """The command line's --config.* overrides plus what the trainers' own flags set."""
    extra = ["training.check_memory=False"] if getattr(args, "force", False) else []
    if args.profile is None:
        return [*overrides, *extra]
    if args.profile < 1:
        raise ValueError(f"--profile is {args.profile}; expected a number of steps >= 1")
    return [*overrides, *extra, f"training.profile_steps={args.profile}"]


def diffusion_run_config(args, overrides: list[str]):
    """The run's config for `train` / `train-arc`: --config with the overrides, adopting the model sections of
    --init-from MODEL when given (its overrides re-applied on top)."""
    from stableaudio_jax.config_loader import load_config
    config = load_config(args.config, training_overrides(args, overrides))
    if args.init_from:
        from stableaudio_jax.training.init_from import diffusion_config_from_model
        config = diffusion_config_from_model(config, args.init_from, overrides)
    return config
