"""Shared pieces of the benchmark scripts: timing, environment description, JSON output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up run (compile, allocator)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def environment(with_torch: bool) -> dict:
    env = {"device": f"{jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})",
           "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
           "versions": {"jax": jax.__version__}}
    if with_torch:
        import torch
        env["versions"]["torch"] = torch.__version__
        torch.set_num_threads(os.cpu_count() or 1)
    return env


def write_report(report: dict, out: str | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
