"""GPU nodes described for ahead-of-time compilation through the CUDA PJRT plugin (``jax-cuda12-plugin``, the
``aot`` extra), without a GPU or a driver.

XLA's GPU compiler needs a target description (a ``GpuTargetConfigProto``: the device's SM count, shared memory,
bandwidth, memory size, compute capability) in place of the device query a real GPU would answer. The figures below
are NVIDIA's published specifications (SXM parts; the L4 is the common 24 GB card); memory sizes are what the
driver reports. XLA's GPU
backend gives no cost analysis, and without autotuning the compiled code is not what a real run picks: memory
plans and collectives are meaningful, speed is not.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class GpuSpec:
    description: str
    sm_count: int
    compute_capability: tuple[int, int]
    memory_bytes: int
    memory_bandwidth: int          # bytes / s
    l2_cache_bytes: int
    clock_ghz: float
    shared_memory_per_sm: int
    shared_memory_per_block_optin: int


SPECS = {
    "h100": GpuSpec("NVIDIA H100 80GB HBM3", 132, (9, 0), 84_978_434_048, 3_352_320_000_000, 50 * 2 ** 20, 1.98,
                    228 * 1024, 227 * 1024),
    "h200": GpuSpec("NVIDIA H200", 132, (9, 0), 150_754_820_096, 4_800_000_000_000, 50 * 2 ** 20, 1.98,
                    228 * 1024, 227 * 1024),
    "l4": GpuSpec("NVIDIA L4", 58, (8, 9), 24_152_899_584, 300_000_000_000, 48 * 2 ** 20, 2.04, 100 * 1024,
                  99 * 1024),
    "a100": GpuSpec("NVIDIA A100-SXM4-80GB", 108, (8, 0), 85_198_045_184, 2_039_000_000_000, 40 * 2 ** 20, 1.41,
                    164 * 1024, 163 * 1024),
}


def target_config(spec: GpuSpec) -> str:
    """The ``GpuTargetConfigProto`` text XLA compiles against."""
    major, minor = spec.compute_capability
    return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: {spec.shared_memory_per_sm}
  threads_per_core_limit: 2048
  core_count: {spec.sm_count}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {spec.memory_bandwidth}
  l2_cache_size: {spec.l2_cache_bytes}
  clock_rate_ghz: {spec.clock_ghz}
  device_memory_size: {spec.memory_bytes}
  shared_memory_per_block_optin: {spec.shared_memory_per_block_optin}
  cuda_compute_capability {{ major: {major} minor: {minor} }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
device_description_str: "{spec.description}"
"""


def devices(chip: str, count: int, per_node: int = 8) -> list:
    """``count`` GPUs of kind ``chip`` in nodes of ``per_node`` (one process per node), as compile targets."""
    try:
        import jax_plugins.xla_cuda12  # noqa: F401  (the CUDA PJRT plugin)
    except ImportError:
        raise RuntimeError("compiling for GPUs needs the CUDA PJRT plugin: pip install 'stableaudio-jax[aot]' "
                           "(jax-cuda12-plugin at the installed jax version)") from None
    if count < 1 or (count > per_node and count % per_node):
        raise ValueError(f"{count} GPUs: expected up to {per_node} or a multiple of {per_node} (whole nodes)")
    from jax.experimental import topologies
    nodes, gpus = (1, count) if count <= per_node else (count // per_node, per_node)
    topology = topologies.get_topology_desc(platform="cuda", topology=f"1x{nodes}x{gpus}",
                                            target_config=target_config(SPECS[chip]))
    return list(topology.devices)
