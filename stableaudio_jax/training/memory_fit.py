"""A run that cannot fit stops before it starts: the training step is compiled first, its per-device need read from
``memory_analysis()`` (the numbers ``bench sharding`` shows) and compared with a device's memory; a step that does
not fit is refused with one line naming the need, the capacity and settings that would fit, each checked by
compiling it too. Without this, ``train --init-from sao-jax/`` with SAO's recipe (batch 256) is killed by the
kernel's OOM killer a minute in, with no message.

Capacity: ``training.device_memory_gib`` when set; else the allocator's limit on a GPU/TPU (``bytes_limit``: what
XLA_PYTHON_CLIENT_MEM_FRACTION / _PREALLOCATE leave); on CPU, the host's available memory shared by its local
devices (several processes on one host each count all of it: optimistic there). Processes agree on the smallest. The check costs no extra compile: jax reuses the compiled step at the
first call. ``--force`` (``check_memory=False``) skips it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Callable

import jax
import ml_collections
import numpy as np

from stableaudio_jax.config_loader import apply_overrides

logger = logging.getLogger(__name__)
GiB = 2 ** 30


class MemoryFitError(ValueError):
    """The compiled step needs more memory per device than a device has."""


@dataclasses.dataclass(frozen=True)
class Need:
    """Per-device bytes of one compiled step, as XLA plans them."""
    arguments: int
    temporaries: int
    total: int  # arguments + outputs - donated + temporaries

    @classmethod
    def of(cls, compiled) -> "Need":
        stats = compiled.memory_analysis()
        if stats is None:
            raise RuntimeError("this backend's compiled step reports no memory analysis")
        args, temp = int(stats.argument_size_in_bytes), int(stats.temp_size_in_bytes)
        total = args + int(stats.output_size_in_bytes) - int(stats.alias_size_in_bytes) + temp
        return cls(args, temp, total)

    def describe(self) -> str:
        return f"{self.total / GiB:.2f} GiB (state and batch {self.arguments / GiB:.2f}, " \
               f"temporaries {self.temporaries / GiB:.2f})"


def device_capacity(config: ml_collections.ConfigDict) -> tuple[int, str]:
    """(bytes one device may use, where that figure comes from), the same on every process."""
    override = config.training.get("device_memory_gib")
    if override:
        return int(float(override) * GiB), "training.device_memory_gib"
    device = jax.local_devices()[0]
    stats = _memory_stats(device)
    if stats.get("bytes_limit"):
        capacity, source = int(stats["bytes_limit"]), f"{device.device_kind}'s allocator limit"
    else:
        available, count = _host_available(), jax.local_device_count()
        capacity = available // count
        source = f"host memory available ({available / GiB:.1f} GiB) over {count} local {device.platform} devices"
    return _smallest_over_processes(capacity), source


def _memory_stats(device) -> dict:
    try:
        return device.memory_stats() or {}
    except Exception:  # noqa: BLE001 - a backend without allocator statistics (CPU) raises or returns None
        return {}


def _host_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _smallest_over_processes(value: int) -> int:
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils
    # in MiB: the gather goes through jax, whose integers are 32-bit (without x64) and would wrap bytes past 2 GiB
    mib = multihost_utils.process_allgather(np.array([value // 2 ** 20], np.int32))
    return int(np.min(mib)) * 2 ** 20


def check_fits(config: ml_collections.ConfigDict, need_of: Callable[[ml_collections.ConfigDict], Need],
               command: str) -> Need:
    """Raises :class:`MemoryFitError` (one line: need, capacity, settings that fit) when ``need_of(config)``, the
    compiled step's need, exceeds a device's capacity; returns the need otherwise."""
    need = need_of(config)
    capacity, source = device_capacity(config)
    logger.info("%s: the compiled step needs %s per device; a device has %.2f GiB (%s)", command, need.describe(),
                capacity / GiB, source)
    if need.total <= capacity:
        return need
    fits = [f"{' '.join(flags)} ({n.total / GiB:.2f} GiB)" for flags, n in settings_that_fit(config, need_of, capacity)]
    plan = "; settings that fit: " + " | ".join(fits) if fits else \
        "; no single change of batch, remat, fsdp or ema.place fits: use more devices or a smaller model"
    raise MemoryFitError(f"{command}: the compiled step needs {need.describe()} per device but a device has "
                         f"{capacity / GiB:.2f} GiB ({source}){plan}; --force starts anyway")


def settings_that_fit(config, need_of, capacity: int, most: int = 3) -> list[tuple[list[str], Need]]:
    """Up to ``most`` alternatives (as ``--config.*`` flags) whose compiled step fits ``capacity``: the largest
    batch that fits, then remat, fsdp over every device, the EMA in host memory, then those together with the
    largest batch that fits. Each is compiled to check it."""
    found: list[tuple[list[str], Need]] = []
    batch = _largest_batch(config, need_of, capacity)
    if batch:
        found.append(batch)
    changes = _memory_changes(config)
    for change in changes:
        result = _try(config, change, need_of, capacity)
        if result:
            found.append(result)
    if not found and len(changes) > 1:
        combined = {k: v for change in changes for k, v in change.items()}
        result = _try(config, combined, need_of, capacity) or _largest_batch(_changed(config, combined), need_of,
                                                                              capacity, combined)
        if result:
            found.append(result)
    return found[:most]


def _memory_changes(config) -> list[dict]:
    """Single setting changes that lower a step's per-device memory, where they apply to this config."""
    changes = []
    remat = config.model.get("remat")
    if remat is not None and remat not in ("full", True):
        changes.append({"model.remat": "full" if isinstance(remat, str) else True})
    mesh, devices = config.mesh, jax.device_count()
    if int(mesh.get("tensor", 1)) == 1 and int(mesh.get("fsdp", 1)) not in (-1, devices) and devices > 1:
        changes.append({"mesh.data": 1, "mesh.fsdp": devices})
    ema = config.training.get("ema") or {}
    if ema.get("place", "device") == "device" and jax.default_backend() != "cpu":  # on CPU host memory is the same
        changes.append({"training.ema.place": "host"})
    return changes


def _largest_batch(config, need_of, capacity: int, base: dict | None = None):
    """The largest global batch (halving, down to one example per data shard) whose step fits, or None."""
    batch, smallest = int(config.training.batch_size), _data_shards(config)
    while batch // 2 >= smallest and (batch // 2) % smallest == 0:
        batch //= 2
        result = _try(config, {"training.batch_size": batch}, need_of, capacity, base)
        if result:
            return result
    return None


def _data_shards(config) -> int:
    from stableaudio_jax.parallel.mesh import resolve_mesh_shape
    sizes = dict(zip(("data", "fsdp", "tensor"), resolve_mesh_shape(
        [int(config.mesh.get(a, 1)) for a in ("data", "fsdp", "tensor")], jax.device_count())))
    return math.lcm(sizes["data"] * sizes["fsdp"], jax.process_count())


def _try(config, change: dict, need_of, capacity: int, base: dict | None = None):
    change = dict(base or {}, **change)
    try:
        need = need_of(_changed(config, change))
    except (ValueError, MemoryError) as e:  # a setting this model or mesh cannot take: not a candidate
        logger.info("memory plan: %s does not apply (%s)", change, e)
        return None
    if need.total > capacity:
        return None
    return [f"--config.{key}={value}" for key, value in change.items()], need


def _changed(config, change: dict) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``change`` applied as the ``--config.key=value`` flags the plan prints (so the flags
    mean exactly what was compiled)."""
    return apply_overrides(ml_collections.ConfigDict(config.to_dict()), [f"{k}={v}" for k, v in change.items()])
