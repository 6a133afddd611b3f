"""Did JAX land on the accelerator this runtime has? The notebooks' check right after their install cell.

A Colab (or any notebook) runtime with a TPU or a GPU whose JAX falls back to the CPU still runs every cell, only
a hundred times slower, and says so in one log line nobody reads. The notebooks' install cell detects the runtime
(from the environment, before JAX is imported: ``TPU_ACCELERATOR_TYPE`` / ``COLAB_TPU_ADDR``, ``COLAB_GPU``,
``nvidia-smi``, and the runtime's own pre-installed JAX asked in a subprocess) and installs the matching extra;
:func:`check_accelerator` then asks the JAX this process imports and stops with the fix when the two disagree.

jax is imported inside the functions: a stale module is looked for before anything imports it.
"""
from __future__ import annotations

import importlib.metadata
import os
import sys

ACCELERATORS = ("tpu", "gpu")
_FIX = {
    "tpu": ('%pip install -U "jax[tpu]"  (stableaudio-jax\'s `tpu` extra: JAX with libtpu)',
            "TPU"),
    "gpu": ('%pip install -U "jax[cuda12]"  (stableaudio-jax\'s `gpu` extra: the CUDA 12 plugin and its libraries); '
            "`!nvidia-smi` must list the GPU", "CUDA"),
}
_RESTART = "restart the session (Colab: Runtime → Restart session) and run the notebook again from the top"


class RuntimeMismatch(RuntimeError):
    """JAX is not on the runtime's accelerator, or runs a version older than the one installed."""


def stale_modules(names: tuple[str, ...] = ("jax", "jaxlib", "numpy")) -> list[str]:
    """``name loaded -> installed`` for each module imported before an install replaced it on disk: this process
    keeps running the old one until it restarts."""
    stale = []
    for name in names:
        module = sys.modules.get(name)
        loaded = getattr(module, "__version__", None)
        if loaded is None:
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if installed != loaded:
            stale.append(f"{name} {loaded} -> {installed}")
    return stale


def check_accelerator(runtime: str) -> str:
    """``runtime``: 'tpu', 'gpu' or 'cpu' (what the install cell detected). Returns a one-line description of
    JAX's devices; raises :class:`RuntimeMismatch` naming the expected platform, what JAX runs on and the fix when
    a TPU or GPU runtime's JAX is on anything else."""
    if runtime not in (*ACCELERATORS, "cpu"):
        raise ValueError(f"runtime {runtime!r}: expected 'tpu', 'gpu' or 'cpu'")
    stale = stale_modules()
    if stale:
        raise RuntimeMismatch(f"the install replaced modules this session had already imported ({', '.join(stale)}); "
                              f"{_RESTART} (the install is kept)")
    import jax
    try:
        devices = jax.devices()
    except RuntimeError as e:  # JAX_PLATFORMS names a backend that failed to start
        if runtime == "cpu":
            raise
        raise RuntimeMismatch(f"this is a {runtime.upper()} runtime but JAX could not start a backend ({e}). "
                              f"Fix: {_FIX[runtime][0]}; then {_RESTART}") from e
    platform, kind = devices[0].platform, devices[0].device_kind
    described = f"{len(devices)} {platform} device(s): {kind}"
    if runtime == "cpu" or platform == runtime:
        return described
    forced = os.environ.get("JAX_PLATFORMS", "")
    # JAX_PLATFORMS names the GPU backend "cuda" (or "rocm"), the TPU one "tpu"
    allowed = not forced or runtime in forced or (runtime == "gpu" and ("cuda" in forced or "rocm" in forced))
    cause = (f"JAX's {_FIX[runtime][1]} backend did not load. Fix: {_FIX[runtime][0]}; then {_RESTART}" if allowed
             else f"JAX_PLATFORMS={forced!r} keeps JAX off the {runtime}: remove it where it is set, then {_RESTART}")
    raise RuntimeMismatch(f"this is a {runtime.upper()} runtime, but JAX runs on {platform} ({described}): "
                          f"{cause}. Or switch the runtime type to match (Colab: Runtime → Change runtime type).")
