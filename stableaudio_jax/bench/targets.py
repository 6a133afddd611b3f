"""Where a strategy is compiled: the local devices (``cpu``, or whatever accelerators the process sees), a Cloud
TPU slice by its accelerator type (``tpu:v5p-64``), or a GPU node (``gpu:h100x8``) compiled ahead of time.

An ahead-of-time target needs no hardware: ``jax.experimental.topologies`` describes the slice (``jax[tpu]``'s
libtpu, or the CUDA plugin for GPUs: the ``aot`` extra) and XLA compiles for its devices, so the per-device
memory plan and cost are the ones the real slice would get. Nothing runs there, so nothing is measured.

Slice names follow Cloud TPU's accelerator types: ``v5p-N`` and ``v4-N`` count TensorCores (2 per chip; one JAX
device per chip, megacore), ``v5e-N`` (``v5litepod-N``) and ``v6e-N`` count chips. Chip figures (HBM, dense bf16
peak) are Google's published ones, used for fits and MFU.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Sequence

import jax

from stableaudio_jax.parallel import hardware
from stableaudio_jax.parallel.hardware import CHIPS, GPU_CHIPS, TPU_CHIPS, Chip  # noqa: F401


# Chips per slice → physical topology (Cloud TPU's documented shapes)
_TOPOLOGY_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_TOPOLOGY_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
                512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    platform: str                  # "cpu", "tpu", "cuda", "gpu" (local accelerators)
    devices: Sequence[jax.Device]
    hbm_bytes: int | None          # per device; None: unknown (host memory)
    peak_flops: float | None       # per device, dense bf16
    measured: bool                 # True: the devices are this process's, steps can run
    chip: Chip | None = None

    @property
    def device_count(self) -> int:
        return len(self.devices)

    def as_dict(self) -> dict:
        return {"name": self.name, "platform": self.platform, "devices": self.device_count,
                "device_kind": self.devices[0].device_kind, "hbm_bytes": self.hbm_bytes,
                "usable_bytes": usable_bytes(self),
                "peak_flops": self.peak_flops, "measured": self.measured}


def mesh(sizes: Sequence[int], target: Target):
    """A ('data', 'fsdp', 'tensor') mesh over the target's devices in topology-aware order; a logical axis that
    no product of physical axes matches (2 on an 8 x 8 torus) splits a physical axis."""
    from jax.experimental import mesh_utils
    from jax.sharding import AxisType, Mesh

    from stableaudio_jax.parallel.sharding import MESH_AXES
    types = (AxisType.Auto,) * len(MESH_AXES)
    try:
        return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=types, devices=target.devices)
    except (ValueError, AssertionError, NotImplementedError):
        devices = mesh_utils.create_device_mesh(tuple(sizes), devices=target.devices, allow_split_physical_axes=True)
        return Mesh(devices, MESH_AXES, axis_types=types)


def valid_names() -> list[str]:
    tpus = [f"tpu:{k}-N" for k in TPU_CHIPS]
    return ["cpu", "local", *tpus, *(f"gpu:{k}xN" for k in GPU_CHIPS)]


def resolve(name: str) -> Target:
    """``cpu``/``local`` (this process's devices), ``tpu:<type>-<N>`` or ``gpu:<chip>x<N>``."""
    if name in ("cpu", "local"):
        return local_target()
    kind, _, spec = name.partition(":")
    if kind in ("tpu", "gpu"):
        _compile_on_the_host()
        return tpu_target(spec) if kind == "tpu" else gpu_target(spec)
    raise ValueError(f"target {name!r}: expected one of {valid_names()} (e.g. tpu:v5p-64, tpu:v6e-256, gpu:h100x8)")


def _compile_on_the_host() -> None:
    """An ahead-of-time target needs no local accelerator: keep JAX on the host CPU unless a backend is already up.
    Without this, on a machine with the CUDA plugin but no driver, the failed CUDA backend also takes the plugin's
    topology API with it ("topology not implemented for cuda"); on a TPU VM it would hold the chips for nothing."""
    from jax._src import xla_bridge
    if not xla_bridge.backends_are_initialized():
        jax.config.update("jax_platforms", "cpu")


def local_target() -> Target:
    devices = jax.devices()
    platform = devices[0].platform
    chip = CHIPS.get(devices[0].device_kind)
    hbm = chip.hbm_bytes if chip else None
    stats = devices[0].memory_stats() if platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        hbm = int(stats["bytes_limit"])
    return Target(platform, platform, devices, hbm, chip.peak_bf16_flops if chip else None, True, chip)


def tpu_target(spec: str) -> Target:
    match = re.fullmatch(r"(v4|v5e|v5litepod|v5p|v6e)-(\d+)", spec)
    if not match:
        raise ValueError(f"TPU slice {spec!r}: expected <type>-<N> with type one of {sorted(TPU_CHIPS)} "
                         "(Cloud TPU accelerator types, e.g. v5e-8, v5p-64, v6e-256)")
    version = "v5e" if match.group(1) == "v5litepod" else match.group(1)
    chip, count = TPU_CHIPS[version], int(match.group(2))
    chips, rest = divmod(count, chip.cores_per_device)
    shapes = _TOPOLOGY_3D if chip.dims == 3 else _TOPOLOGY_2D
    if rest or chips not in shapes:
        valid = sorted(n * chip.cores_per_device for n in shapes)
        raise ValueError(f"TPU slice {spec!r}: {version} slices come in sizes {valid}")
    # a single chip is a host of its own (libtpu's default host is 2x2)
    hosts = {"chips_per_host_bounds": (1, 1, 1)} if chips == 1 else {}
    topology = _topologies().get_topology_desc(f"{version}:{shapes[chips]}", platform="tpu", **hosts)
    return Target(f"tpu:{version}-{count}", "tpu", list(topology.devices), chip.hbm_bytes, chip.peak_bf16_flops,
                  False, chip)


def gpu_target(spec: str) -> Target:
    from stableaudio_jax.bench import gpu_topology
    match = re.fullmatch(r"([a-z0-9]+)x(\d+)", spec)
    if not match or match.group(1) not in GPU_CHIPS:
        raise ValueError(f"GPU target {spec!r}: expected <chip>x<N> with chip one of {sorted(GPU_CHIPS)} "
                         "(e.g. h100x8)")
    chip, count = GPU_CHIPS[match.group(1)], int(match.group(2))
    devices = gpu_topology.devices(match.group(1), count)
    return Target(f"gpu:{spec}", "cuda", devices, chip.hbm_bytes, chip.peak_bf16_flops, False, chip)


def slice_sizes(family: str) -> list[int]:
    """The sizes (in the family's naming) of ``tpu:v5p``-style families, ascending."""
    kind, _, version = family.partition(":")
    if kind == "tpu" and version in TPU_CHIPS:
        chip = TPU_CHIPS[version]
        return sorted(n * chip.cores_per_device for n in (_TOPOLOGY_3D if chip.dims == 3 else _TOPOLOGY_2D))
    if kind == "gpu" and version in GPU_CHIPS:
        return [1, 2, 4, 8, 16, 32, 64, 128, 256]
    raise ValueError(f"slice family {family!r}: expected tpu:<type> with type one of {sorted(TPU_CHIPS)} or "
                     f"gpu:<chip> with chip one of {sorted(GPU_CHIPS)}")


def is_family(name: str) -> bool:
    """``tpu:v5p``, ``gpu:h100``: a kind of slice without its size."""
    kind, _, version = name.partition(":")
    return (kind == "tpu" and version in TPU_CHIPS) or (kind == "gpu" and version in GPU_CHIPS)


def slice_name(family: str, size: int) -> str:
    return f"{family}-{size}" if family.startswith("tpu:") else f"{family}x{size}"


def _topologies():
    # libtpu takes a machine-wide lock meant for processes that drive real chips; compiling needs none
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        import libtpu  # noqa: F401  (the TPU compiler; jax[tpu])
    except ImportError:
        raise RuntimeError("compiling for a TPU slice needs libtpu: pip install 'stableaudio-jax[aot]' "
                           "(jax[tpu] at the installed jax version)") from None
    from jax.experimental import topologies
    return topologies


def mfu(flops: float | None, seconds: float | None, target: Target) -> float | None:
    """Model FLOPs utilisation: ``flops`` (the whole step, all devices) per ``seconds`` over the slice's peak."""
    return hardware.mfu(flops, seconds, target.chip, target.device_count)


def axis_bandwidth(mesh, axes: str, target: Target) -> float | None:
    """One-way bytes / s per device of a collective over the mesh axes ``axes`` ("fsdp", "data+fsdp"; see
    ``compiled.group_axes``) on the target's links (``hardware.ici_bandwidth`` / ``gpu_bandwidth``): the group of
    device 0 along those axes, placed where the mesh put it. ``None`` for a device of unknown figures."""
    import numpy as np
    chip, names = target.chip, tuple(mesh.axis_names)
    if chip is None or axes == "none":
        return None
    unknown = set(axes.split("+")) - set(names)
    if unknown:
        raise ValueError(f"axes {axes!r}: {sorted(unknown)} not in the mesh's {names}")
    group = list(np.asarray(mesh.devices)[tuple(slice(None) if n in axes.split("+") else 0 for n in names)].flat)
    if target.platform == "tpu":
        extents = [1 + max(d.coords[i] for d in target.devices) for i in range(chip.dims)]
        return hardware.ici_bandwidth(chip, [d.coords for d in group], extents)
    return hardware.gpu_bandwidth(chip, len({d.process_index for d in group}))


def with_bandwidth(traffic: dict, mesh, target: Target) -> dict:
    """``traffic`` (``compiled.traffic``) with each entry's link ``bandwidth`` (``axis_bandwidth``)."""
    return {axes: dict(entry, bandwidth=axis_bandwidth(mesh, axes, target)) for axes, entry in traffic.items()}


def roofline_seconds(cost: dict, traffic: dict, target: Target) -> float | None:
    """A lower bound on the step time from the compiled per-device counts: the slower of compute at peak (FLOPs)
    and HBM traffic (bytes accessed), plus every collective's ring traffic over the links of the mesh axes it runs
    over (``traffic``: ``{axes: {"moved", "bandwidth"}}``, ``with_bandwidth``), not overlapped. Every term is an
    ideal (peak FLOPs, full link and HBM bandwidth), so the sum is a lower bound, not an estimate of the real time.
    ``None`` for a device of unknown figures (the host CPU). It ranks strategies on every target alike: XLA's own
    lower bound (``optimal_seconds``) exists only on TPU and is negative (unknown) for some combined all-reduces."""
    chip = target.chip
    if chip is None or cost.get("flops") is None:
        return None
    compute = max(cost["flops"] / chip.peak_bf16_flops, (cost.get("bytes_accessed") or 0) / chip.hbm_bandwidth)
    links = [(entry["moved"], entry.get("bandwidth")) for entry in traffic.values() if entry["moved"]]
    if any(bandwidth is None for _, bandwidth in links):
        raise ValueError(f"traffic without link bandwidth on {target.name}: {traffic}")
    return compute + sum(moved / bandwidth for moved, bandwidth in links)


def usable_bytes(target: Target) -> int | None:
    """What a program may use per device: the HBM less the runtime's reserve (``Chip.runtime_reserve_bytes``:
    CUDA context and library workspaces on a GPU; nothing on a TPU, whose figure is already JAX's)."""
    if target.hbm_bytes is None:
        return None
    return target.hbm_bytes - (target.chip.runtime_reserve_bytes if target.chip and not target.measured else 0)


def fits(total_bytes: int, target: Target) -> bool | None:
    usable = usable_bytes(target)
    return None if usable is None else total_bytes <= usable
