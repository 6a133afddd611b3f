"""Multi-host start-up and global batches.

``initialize(cfg)`` calls ``jax.distributed.initialize`` when the run spans several processes: explicitly (a
coordinator address from the config or ``STABLEAUDIO_COORDINATOR`` / ``STABLEAUDIO_NUM_PROCESSES`` /
``STABLEAUDIO_PROCESS_ID``), or by JAX's own cluster detection (TPU pods, SLURM, Open MPI, ...) when ``mode`` is
'auto' and such an environment is present. Single-process runs are left alone. ``launch/`` starts such runs on
one machine (local.py), TPU VM slices (tpu_vm.py) and SLURM clusters (slurm.py).
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

logger = logging.getLogger(__name__)
_MULTI_HOST_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def _cluster_size_hint() -> int:
    for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return len(hosts.split(",")) if hosts else 1


def _local_device_ids(cfg: dict) -> list[int] | None:
    ids = cfg.get("local_device_ids")
    source = "distributed.local_device_ids"
    if ids is None and os.environ.get("STABLEAUDIO_LOCAL_DEVICE_IDS"):
        ids, source = os.environ["STABLEAUDIO_LOCAL_DEVICE_IDS"], "STABLEAUDIO_LOCAL_DEVICE_IDS"
    if ids is None:
        return None
    try:
        return [int(i) for i in (ids.split(",") if isinstance(ids, str) else ids)]
    except ValueError:
        raise ValueError(f"{source} is {ids!r}; expected device indices such as '0,1,2,3'") from None


def _wait_for_coordinator(address: str, timeout: float, pid: int, num: int) -> None:
    """Waits until the coordinator's port accepts connections. JAX itself aborts the process (a C++ fatal error
    that blames "another task") when it cannot register in time; this names the address instead."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"distributed: coordinator_address {address!r}; expected HOST:PORT")
    logger.info("process %d of %d: connecting to the coordinator at %s (timeout %d s)", pid, num, address, timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
            return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"process {pid} of {num}: the coordinator at {address} did not answer within "
                                   f"{timeout} s ({error}); is process 0 running there and the port open?") from None
            time.sleep(1)


def initialize(cfg: Any = None) -> bool:
    """Starts JAX's multi-process runtime if this run needs it; returns whether it did.

    ``cfg`` (a mapping / ConfigDict, all optional): ``mode`` 'auto' | 'always' | 'never', ``coordinator_address``,
    ``num_processes``, ``process_id``, ``initialization_timeout`` (seconds, default 300), ``heartbeat_timeout``
    (seconds without a peer's heartbeat before every process fails with an error, default 100) and
    ``local_device_ids`` (or ``STABLEAUDIO_LOCAL_DEVICE_IDS="0,1,..."``: the GPUs this process drives; needed with
    one SLURM task per node, where JAX's detection would give the process only GPU ``SLURM_LOCALID``).
    """
    cfg = dict(cfg or {})
    mode = cfg.get("mode", "auto")
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"distributed.mode is {mode!r}; expected 'auto', 'always' or 'never'")
    if mode == "never" or jax.distributed.is_initialized():
        return False
    address = cfg.get("coordinator_address") or os.environ.get("STABLEAUDIO_COORDINATOR")
    num = cfg.get("num_processes") or os.environ.get("STABLEAUDIO_NUM_PROCESSES")
    pid = cfg.get("process_id")
    pid = pid if pid is not None else os.environ.get("STABLEAUDIO_PROCESS_ID")
    options = dict(initialization_timeout=int(cfg.get("initialization_timeout", 300)),
                   heartbeat_timeout_seconds=int(cfg.get("heartbeat_timeout", 100)),
                   local_device_ids=_local_device_ids(cfg))
    if address:
        if num is None or pid is None:
            raise ValueError(f"distributed: coordinator_address {address!r} needs num_processes and process_id "
                             "(config or STABLEAUDIO_NUM_PROCESSES / STABLEAUDIO_PROCESS_ID)")
        if int(pid) != 0:  # process 0 serves the coordinator; the others must reach it
            _wait_for_coordinator(address, options["initialization_timeout"], int(pid), int(num))
        jax.distributed.initialize(coordinator_address=address, num_processes=int(num), process_id=int(pid),
                                   **options)
    elif mode == "always" or _cluster_size_hint() > 1:
        jax.distributed.initialize(**options)  # JAX detects TPU / SLURM / MPI clusters
    else:
        return False
    logger.info("jax.distributed: process %d of %d on %s, %d local / %d global devices (%s)", jax.process_index(),
                jax.process_count(), socket.gethostname(), jax.local_device_count(), jax.device_count(),
                jax.local_devices()[0].device_kind)
    return True


def global_batch(local: Any, sharding: NamedSharding) -> Any:
    """Each process's slice of the batch (leading axis) → global arrays laid out by ``sharding``."""
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


def host_slice(global_batch_size: int) -> slice:
    """The rows of a global batch this process loads (processes take equal, contiguous slices)."""
    count, index = jax.process_count(), jax.process_index()
    if global_batch_size % count:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by {count} processes")
    per = global_batch_size // count
    return slice(index * per, (index + 1) * per)
