"""Shared pieces of the benchmark scripts: interleaved-pairs timing, the environment record, JSON output.

A ratio between two frameworks is only a result with its spread, measured so that both sides see the same machine:
``interleaved_pairs`` times ours and the reference alternately in one process (ours, reference, ours, ...), after
warm-ups, and reports every pair and the median and min-max of the per-pair ratio. A busy neighbour then slows
both sides of a pair instead of one side of the whole comparison.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A script run as `python benchmarks/x.py` puts benchmarks/ first on sys.path, so `import stableaudio_jax` would
# find whatever copy is installed (possibly another checkout). Benchmarks measure the checkout they live in.
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import jax  # noqa: E402

MIN_DOC_PAIRS = 7  # docs/benchmarks.md quotes only ratios measured with at least this many pairs


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up run (compile, allocator). For one side
    alone (no reference to pair with); ratios use ``interleaved_pairs``."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and process-CPU seconds of one call. CPU seconds include every thread of this process (XLA's pool,
    torch's OpenMP team): a call that waits on a busy core shows more wall than CPU time."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def interleaved_pairs(ours: Callable[[], object], reference: Callable[[], object], pairs: int = MIN_DOC_PAIRS,
                      warmup: int = 1) -> dict:
    """Times ``pairs`` pairs (ours, then the reference) after ``warmup`` untimed pairs (compilation, allocators,
    page cache). Each callable must block until its work is done. The ratio of a pair is reference seconds / our
    seconds: above 1 means ours is faster. Returns every pair and the summary (median, min, max) of the ratio and
    of each side's seconds."""
    if pairs < 1 or warmup < 0:
        raise ValueError(f"interleaved_pairs: pairs={pairs} (expected >= 1), warmup={warmup} (expected >= 0)")
    for _ in range(warmup):
        ours()
        reference()
    load_before = os.getloadavg()
    rows = []
    for _ in range(pairs):
        ours_s, ours_cpu = _timed(ours)
        ref_s, ref_cpu = _timed(reference)
        rows.append({"ours_s": ours_s, "reference_s": ref_s, "ratio": ref_s / ours_s,
                     "ours_cpu_s": ours_cpu, "reference_cpu_s": ref_cpu})
    return {"pairs": rows, "summary": summarize(rows, warmup),
            "load_average": {"before": list(load_before), "after": list(os.getloadavg())}}


def summarize(rows: list[dict], warmup: int) -> dict:
    """The summary ``interleaved_pairs`` reports, recomputable from ``rows`` (tests check that it is)."""
    return {"n_pairs": len(rows), "warmup_pairs": warmup, "order": "ours, reference",
            "ratio": spread([r["ratio"] for r in rows]), "ours_s": spread([r["ours_s"] for r in rows]),
            "reference_s": spread([r["reference_s"] for r in rows]),
            # the same ratio in process-CPU seconds: steadier than wall time on a shared host when each side runs
            # on one core (taskset), since waiting for the core is not counted; with several threads it counts
            # spinning (OpenMP) and idle workers too, so quote it only for one-core runs
            "cpu_ratio": spread([r["reference_cpu_s"] / max(r["ours_cpu_s"], 1e-9) for r in rows])}


def environment(with_torch: bool) -> dict:
    """What a timing depends on: device, host and its load, versions, thread counts, BLAS / oneDNN, JAX and XLA
    flags, and the code measured (the package path and git commit)."""
    env = {"device": f"{jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})",
           "host": _host(), "versions": _versions(), "jax": _jax_settings(), "code": _code()}
    if with_torch:
        import torch
        # torch's default is the physical core count; XLA's CPU pool uses every schedulable core: give both the same
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        env["versions"]["torch"] = torch.__version__
        env["torch"] = _torch_settings(torch)
    env["numpy_blas"] = _numpy_blas()
    return env


def _host() -> dict:
    model = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    return {"machine": platform.machine(), "cpu_model": model, "cpus": os.cpu_count(),
            "schedulable_cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "load_average_at_start": list(os.getloadavg())}


def _versions() -> dict:
    import importlib.metadata
    import numpy as np
    out = {"jax": jax.__version__, "numpy": np.__version__}
    for name in ("jaxlib", "flax", "diffusers", "transformers"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _jax_settings() -> dict:
    """XLA:CPU has no thread setting of its own here: its intra-op pool spans the schedulable cores. The dot
    library is read off a compiled matmul (YNNPACK fusions are named ``ynn_fusion``)."""
    out = {"XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", ""),
           "default_matmul_precision": str(jax.config.jax_default_matmul_precision),
           "enable_x64": bool(jax.config.jax_enable_x64)}
    if jax.default_backend() == "cpu":
        import jax.numpy as jnp
        spec = jax.ShapeDtypeStruct((64, 64), jnp.float32)
        text = jax.jit(jnp.matmul).lower(spec, spec).compile().as_text()
        out["cpu_dot_library"] = next((lib for key, lib in (("ynn_fusion", "YNNPACK"), ("xnn_fusion", "XNNPACK"),
                                                            ("onednn", "oneDNN")) if key in text), "XLA/Eigen")
    return out


def _torch_settings(torch) -> dict:
    config = torch.__config__.show().splitlines()
    library = [line.strip(" -") for line in config if "Math Kernel Library" in line or "MKL-DNN" in line
               or "oneDNN" in line or "OpenMP" in line]
    parallel = [line.strip() for line in torch.__config__.parallel_info().splitlines()
                if "backend" in line or "NUM_THREADS" in line]
    return {"num_threads": torch.get_num_threads(), "num_interop_threads": torch.get_num_interop_threads(),
            "mkldnn_enabled": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
            "mkl_available": bool(torch.backends.mkl.is_available()), "libraries": library, "parallel": parallel,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
            "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "")}


def _numpy_blas() -> dict:
    import numpy as np
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (KeyError, TypeError, ValueError):
        return {}
    return {"name": blas.get("name"), "version": blas.get("version")}


def _code() -> dict:
    import stableaudio_jax
    out = {"stableaudio_jax": os.path.dirname(os.path.abspath(stableaudio_jax.__file__))}
    try:
        git = lambda *a: subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True,  # noqa: E731
                                        timeout=10, check=True).stdout
        out["git_commit"] = git("rev-parse", "HEAD").strip()
        status = git("status", "--porcelain", "--untracked-files=no")  # "XY path" lines
        out["git_dirty_paths"] = [line[3:] for line in status.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None  # not a git checkout (an sdist, a copied folder)
    return out


def write_report(report: dict, out: str | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


def random_text_to_audio(config, text_encoder, text_width: int, source: str, dtype: str = "float32"):
    """A ``TextToAudioModel`` with random weights at a diffusion config's sizes (its DiT and its ``vae``), computing
    in ``dtype``, around ``text_encoder`` (whose features are ``text_width`` wide): what the generation benchmarks
    time."""
    import flax.linen as nn
    import jax.numpy as jnp
    import ml_collections

    from stableaudio_jax.diffusion.samplers import default_sampling
    from stableaudio_jax.models.conditioned import example_text
    from stableaudio_jax.store import VAE, TextToAudioModel, diffusion_model
    from stableaudio_jax.store.builders import diffusion_model_from_config, resolve_conditioning, vae_from_config
    model = diffusion_model_from_config(resolve_conditioning(config), dtype, "float32")
    text, mask = example_text(1, int(config.conditioning.text.get("max_length") or 77), text_width)
    params = jax.jit(lambda k: nn.unbox(model.init(k, jnp.zeros((1, 16, model.latent_channels)), text, mask)))(
        jax.random.key(1))
    vae_module = vae_from_config(config.vae, dtype=dtype)
    vae_params = jax.jit(lambda k: vae_module.init(k, jnp.zeros((1, vae_module.downsampling_ratio, 2)),
                                                   sample=False))(jax.random.key(2))
    vae = VAE(vae_module, vae_params, ml_collections.ConfigDict(config.vae.to_dict()), f"random {source} VAE")
    return TextToAudioModel(text_encoder, diffusion_model(config, params, f"random {source} DiT", dtype=dtype),
                            vae, ml_collections.ConfigDict({"audio": config.audio.to_dict(),
                                                            "sampling": default_sampling("v")}), "benchmark")

