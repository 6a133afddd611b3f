"""The CLI's sub-commands: each module has ``add_parser(subparsers)`` and ``run(args, overrides) -> exit code``."""
