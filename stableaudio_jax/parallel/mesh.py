"""Device meshes from config: named axes ('data', 'fsdp', 'tensor'), one of them may be -1 (fill the rest)."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from stableaudio_jax.parallel.sharding import MESH_AXES


def resolve_mesh_shape(shape: Mapping[str, int] | Sequence[int], num_devices: int,
                       axis_names: Sequence[str] = MESH_AXES) -> tuple[int, ...]:
    """Fills the single -1 entry so the product equals ``num_devices``; raises a clear error otherwise."""
    if hasattr(shape, "keys"):  # a dict or an ml_collections ConfigDict (not a registered Mapping)
        unknown = sorted(set(shape) - set(axis_names))
        if unknown:
            raise ValueError(f"mesh shape names unknown axes {unknown}; expected a subset of {list(axis_names)}")
        sizes = [int(shape.get(name, 1)) for name in axis_names]
    else:
        sizes = [int(s) for s in shape]
        if len(sizes) != len(axis_names):
            raise ValueError(f"mesh shape {tuple(sizes)} has {len(sizes)} entries; expected one per axis "
                             f"{tuple(axis_names)}")
    fill = [i for i, s in enumerate(sizes) if s == -1]
    if len(fill) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh shape {dict(zip(axis_names, sizes))}: sizes must be positive, with at most one -1")
    known = math.prod(s for s in sizes if s != -1)
    if fill:
        if num_devices % known:
            raise ValueError(f"mesh shape {dict(zip(axis_names, sizes))}: {num_devices} devices are not divisible "
                             f"by the fixed axes' product {known}")
        sizes[fill[0]] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh shape {dict(zip(axis_names, sizes))} needs {math.prod(sizes)} devices; "
                         f"{num_devices} are available")
    return tuple(sizes)


def make_mesh(shape: Mapping[str, int] | Sequence[int], axis_names: Sequence[str] = MESH_AXES,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with Auto axis types (the jit in/out-shardings style with logical constraints).

    Uses ``jax.make_mesh`` for all devices (topology-aware ordering on TPU/GPU); an explicit device list is laid
    out in the order given. Devices of several TPU slices (multi-slice) get a hybrid mesh whose 'data' axis spans
    the slices (``jax.make_mesh`` refuses multi-slice topologies).
    """
    axis_names = tuple(axis_names)
    pool = list(devices) if devices is not None else jax.devices()
    sizes = resolve_mesh_shape(shape, len(pool), axis_names)
    axis_types = (AxisType.Auto,) * len(axis_names)
    slices = len({getattr(d, "slice_index", 0) for d in pool})
    if slices > 1:
        return Mesh(multi_slice_devices(sizes, axis_names, pool, slices), axis_names, axis_types=axis_types)
    if devices is None:
        return jax.make_mesh(sizes, axis_names, axis_types=axis_types)
    return Mesh(np.asarray(devices, dtype=object).reshape(sizes), axis_names, axis_types=axis_types)


def multi_slice_devices(sizes: Sequence[int], axis_names: Sequence[str], devices: Sequence[jax.Device],
                        slices: int) -> np.ndarray:
    """Devices of ``slices`` TPU slices as an array of ``sizes``: the 'data' axis spans the slices, so only the
    data-parallel gradient reduction crosses the data-center network between them (fsdp and tensor stay on each
    slice's ICI)."""
    from jax.experimental import mesh_utils
    shape = dict(zip(axis_names, sizes))
    if "data" not in shape or shape["data"] % slices:
        raise ValueError(f"mesh {shape} on {slices} TPU slices: the 'data' axis spans the slices (their link is "
                         f"the data-center network), so mesh.data must be a multiple of {slices}, e.g. "
                         f"--config.mesh.data={slices} --config.mesh.fsdp=-1")
    across = [slices if name == "data" else 1 for name in axis_names]
    within = [size // across[i] for i, size in enumerate(sizes)]
    return mesh_utils.create_hybrid_device_mesh(within, across, devices, allow_split_physical_axes=True)
