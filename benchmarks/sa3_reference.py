"""Imports modules of Stable Audio 3's reference code (a checkout of Stability-AI/stable-audio-3) for the scripts
that write parity fixtures (benchmarks/make_same_reference.py, benchmarks/make_sa3_guidance_reference.py).

The reference is not installable here (it needs torchaudio, which must not be installed next to this project's
torch, and its package import pulls in the whole pipeline): torchaudio and the package's top level are stubbed out,
so only the modules asked for are imported; none of the stubbed code runs.
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import types


def import_reference(root: str, *modules: str) -> list:
    """``stable_audio_3.<module>`` for each of ``modules``, from the checkout at ``root``."""
    torchaudio = types.ModuleType("torchaudio")
    torchaudio.transforms = types.SimpleNamespace(Resample=None)
    sys.modules.setdefault("torchaudio", torchaudio)
    sys.modules.setdefault("torchaudio.transforms", torchaudio.transforms)
    package = types.ModuleType("stable_audio_3")
    package.__path__ = [os.path.join(os.path.abspath(root), "stable_audio_3")]
    sys.modules["stable_audio_3"] = package
    audio_utils = types.ModuleType("stable_audio_3.inference.audio_utils")
    audio_utils.prepare_audio = audio_utils.numpy_audio_to_tensor = None
    sys.modules["stable_audio_3.inference.audio_utils"] = audio_utils
    found = [importlib.import_module(f"stable_audio_3.{name}") for name in modules]
    transformer = sys.modules.get("stable_audio_3.models.transformer")
    if transformer is not None:
        transformer.flex_attention_compiled = None  # CPU attention then takes its plain SDPA paths
    return found


def reference_commit(root: str, given: str | None) -> str | None:
    """The checkout's commit: ``given``, else ``git rev-parse HEAD`` in it (None outside a work tree)."""
    if given:
        return given
    found = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() or None


def fixture_arguments(description: str, default_out: str, argv=None) -> argparse.Namespace:
    """The fixture scripts' command line: ``--reference`` (the checkout), ``--out``, ``--reference-commit``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="a checkout of Stability-AI/stable-audio-3")
    parser.add_argument("--out", default=default_out)
    parser.add_argument("--reference-commit", help="the checkout's commit, when it is not a git work tree")
    return parser.parse_args(argv)


def write_fixture(args: argparse.Namespace, arrays: dict, meta: dict) -> None:
    """``arrays`` and a ``configs`` entry (``meta`` + torch's version + the checkout's commit) into ``args.out``."""
    import json

    import numpy as np
    import torch
    commit = reference_commit(args.reference, args.reference_commit)
    arrays["configs"] = np.array(json.dumps(dict(meta, torch=torch.__version__, reference_commit=commit or None)))
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {len(arrays)} arrays, {os.path.getsize(args.out) / 1e3:.0f} kB")
