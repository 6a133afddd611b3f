"""Accelerator figures the project plans and reports with: per-device HBM, dense bf16 peak, HBM bandwidth and the
bandwidth of the links a collective runs over.

Google's and NVIDIA's published figures (``SOURCES`` names the page of each); ``Chip.kind`` is the ``device_kind``
JAX reports, so a running process finds its own chip (``local_chip``) for MFU in training logs, and the planner
(``bench/targets.py``) the chips of slices it compiles for.

Links, per mesh axis (``ici_bandwidth``, ``gpu_bandwidth``): a collective is charged to the links its group of
devices actually has, not to the chip's total.
- TPU: every chip has one ICI link in each direction of each torus dimension (4 on the 2-D v5e/v6e, 6 on the 3-D
  v4/v5p). A ring over a group that spans a dimension sends through one link of that dimension per device; where
  the dimension wraps around (a torus, not a mesh) and the group covers it whole, the ring runs both ways, two
  links. A group spanning several dimensions uses each one's links at once (a multi-dimensional ring). Wraparound:
  v4/v5p slices of whole 4x4x4 cubes (every extent a multiple of 4) are tori; smaller ones (2x2x1, 2x2x2, 2x4x4)
  are not; v5e/v6e wrap only along a full 16-chip edge (the 16x16 pod).
- GPU: within a node a GPU's NVLink (one way; the L4 has none, PCIe instead); a group spanning nodes runs at the
  network's per-GPU bandwidth (one NIC per GPU on DGX-class nodes).
Per-link one-way ICI figures are the per-chip bidirectional figure Google publishes, halved, over the chip's links.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax

GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
    kind: str                # the device_kind JAX reports
    hbm_bytes: int           # per JAX device
    peak_bf16_flops: float   # dense, per JAX device
    cores_per_device: int    # Cloud TPU's names count TensorCores for v4/v5p
    dims: int                # torus dimensions of the slice topology
    hbm_bandwidth: float     # bytes / s
    link_bandwidth: float    # one way, bytes / s: one ICI link (TPU); a GPU's NVLink (or PCIe) within its node
    network_bandwidth: float | None = None  # one way, bytes / s per GPU between nodes (GPU only)
    # memory the runtime takes before the program gets any (CUDA context, cuBLAS / cuDNN workspaces, NCCL
    # buffers): an estimate, not a published figure; TPU HBM figures above are already what JAX can allocate
    runtime_reserve_bytes: int = 0


GPU_RUNTIME_RESERVE = int(1.5 * GiB)
TPU_CHIPS = {
    "v4": Chip("TPU v4", 32 * GiB, 275e12, 2, 3, 1200e9, 45e9),
    "v5e": Chip("TPU v5 lite", 16 * GiB, 197e12, 1, 2, 819e9, 50e9),
    "v5p": Chip("TPU v5", 95 * GiB, 459e12, 2, 3, 2765e9, 100e9),
    "v6e": Chip("TPU v6 lite", 32 * GiB, 918e12, 1, 2, 1640e9, 100e9),
}
GPU_CHIPS = {  # memory as the driver reports it (gpu_topology.SPECS); dense bf16 tensor-core peak (SXM)
    "h100": Chip("NVIDIA H100 80GB HBM3", 84_978_434_048, 989e12, 1, 1, 3350e9, 450e9, 50e9, GPU_RUNTIME_RESERVE),
    "h200": Chip("NVIDIA H200", 150_754_820_096, 989e12, 1, 1, 4800e9, 450e9, 50e9, GPU_RUNTIME_RESERVE),
    "a100": Chip("NVIDIA A100-SXM4-80GB", 85_198_045_184, 312e12, 1, 1, 2039e9, 300e9, 25e9, GPU_RUNTIME_RESERVE),
    "l4": Chip("NVIDIA L4", 24_152_899_584, 121e12, 1, 1, 300e9, 32e9, 12.5e9 / 8, GPU_RUNTIME_RESERVE),
}
CHIPS = {chip.kind: chip for chip in (*TPU_CHIPS.values(), *GPU_CHIPS.values())}

SCALING_BOOK = "https://jax-ml.github.io/scaling-book/tpus/"
# Where each figure above comes from (the test in tests/test_sharding.py checks peak and HBM bandwidth against
# the text). Link figures are one way.
SOURCES = {
    "v4": "https://cloud.google.com/tpu/docs/v4 (275 TFLOPs bf16, 32 GiB, 1200 GBps HBM); the page gives no ICI "
          f"figure: 45 GB/s one way per link, 6 links, from {SCALING_BOOK} (its ICI table); wraparound on whole "
          "4x4x4 cubes (same page)",
    "v5e": "https://cloud.google.com/tpu/docs/v5e (197 TFLOPs bf16, 16 GB, 819 GBps HBM, 400 GBps bidirectional "
           "ICI per chip over 4 ICI ports: 50 GB/s one way per link); 2-D torus wrapping only on a full 16-chip "
           f"edge ({SCALING_BOOK})",
    "v5p": "https://cloud.google.com/tpu/docs/v5p (459 TFLOPs bf16, 95 GB, 2765 GBps HBM, 1200 GBps bidirectional "
           "ICI per chip over 6 links: 100 GB/s one way per link; 95 GiB is the HBM JAX can allocate); 3-D torus "
           f"from a whole 4x4x4 cube ({SCALING_BOOK}; the v5p page lists no cube below 4x4x4)",
    "v6e": "https://cloud.google.com/tpu/docs/v6e (918 TFLOPs bf16, 32 GB, 1638 GBps HBM (1640e9 above, 0.1% "
           "over), 800 GBps bidirectional ICI per chip over 4 links: 100 GB/s one way per link); wraparound as "
           f"v5e ({SCALING_BOOK})",
    "h100": "https://www.nvidia.com/en-us/data-center/h100/ (H100 SXM: 989 TFLOPS dense bf16, 3.35 TB/s, NVLink "
            "900 GB/s bidirectional: 450 GB/s one way); between nodes https://www.nvidia.com/en-us/data-center/"
            "dgx-h100/ (8 x ConnectX-7 400 Gb/s: 50 GB/s per GPU)",
    "h200": "https://www.nvidia.com/en-us/data-center/h200/ (989 TFLOPS dense bf16, 4.8 TB/s, NVLink 900 GB/s); "
            "between nodes as DGX H100/H200 (400 Gb/s per GPU: 50 GB/s)",
    "a100": "https://www.nvidia.com/en-us/data-center/a100/ (A100 SXM 80GB: 312 TFLOPS bf16, 2039 GB/s, NVLink "
            "600 GB/s bidirectional: 300 GB/s one way); between nodes https://www.nvidia.com/en-us/data-center/"
            "dgx-a100/ (8 x ConnectX-6 200 Gb/s: 25 GB/s per GPU)",
    "l4": "https://www.nvidia.com/en-us/data-center/l4/ (121 TFLOPS dense bf16 (242 with sparsity), 300 GB/s, PCIe "
          "Gen4 x16: 64 GB/s bidirectional, 32 GB/s one way, no NVLink); between nodes "
          "https://cloud.google.com/compute/docs/gpus#l4-gpus (g2-standard-96: 8 L4s, 100 Gbps per VM: 1.56 GB/s "
          "per GPU)",
}


def local_chip() -> Chip | None:
    """This process's accelerator, or None (CPU, or a chip without published figures here)."""
    return CHIPS.get(jax.devices()[0].device_kind)


def mfu(flops: float | None, seconds: float | None, chip: Chip | None, devices: int) -> float | None:
    """Model FLOPs utilisation: ``flops`` (the whole step, all devices) per ``seconds`` over ``devices`` chips'
    peak."""
    if not flops or not seconds or chip is None:
        return None
    return flops / seconds / (chip.peak_bf16_flops * devices)


def wraps(chip: Chip, dim: int, extents: Sequence[int]) -> bool:
    """Whether dimension ``dim`` of a slice of ``extents`` chips per dimension has wraparound links."""
    if chip.dims == 3:  # v4 / v5p: whole cubes are joined into a torus by the optical switches
        return all(e % 4 == 0 for e in extents[:3])
    return extents[dim] == 16  # v5e / v6e: only the full pod edge wraps


def ici_bandwidth(chip: Chip, coords: Sequence[Sequence[int]], extents: Sequence[int]) -> float:
    """One-way bytes / s a device of a group (its members' torus ``coords``) sends over in a ring collective:
    per dimension the group spans, one link, or two where the dimension wraps and the group covers it whole."""
    total = 0.0
    for dim in range(len(extents)):
        seen = {c[dim] for c in coords}
        if len(seen) > 1:
            both_ways = len(seen) == extents[dim] and wraps(chip, dim, extents)
            total += chip.link_bandwidth * (2 if both_ways else 1)
    if not total:
        raise ValueError(f"a collective group of coords {list(coords)[:4]}... spans no torus dimension")
    return total


def gpu_bandwidth(chip: Chip, nodes: int) -> float:
    """One-way bytes / s per GPU of a group spanning ``nodes`` nodes: NVLink (or PCIe) within one, the network
    across several."""
    if nodes > 1:
        if chip.network_bandwidth is None:
            raise ValueError(f"{chip.kind}: no network bandwidth known for a group across {nodes} nodes")
        return chip.network_bandwidth
    return chip.link_bandwidth
