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
    out in the order given.
    """
    axis_names = tuple(axis_names)
    n = len(devices) if devices is not None else jax.device_count()
    sizes = resolve_mesh_shape(shape, n, axis_names)
    axis_types = (AxisType.Auto,) * len(axis_names)
    if devices is None:
        return jax.make_mesh(sizes, axis_names, axis_types=axis_types)
    return Mesh(np.asarray(devices, dtype=object).reshape(sizes), axis_names, axis_types=axis_types)
