"""Accelerator figures the project plans and reports with: per-device HBM, dense bf16 peak, HBM and link bandwidth.

Google's and NVIDIA's published figures (``SOURCES`` names the page of each); ``Chip.kind`` is the ``device_kind``
JAX reports, so a running process finds its own chip (``local_chip``) for MFU in training logs, and the planner
(``bench/targets.py``) the chips of slices it compiles for.
"""
from __future__ import annotations

import dataclasses

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
    link_bandwidth: float    # bytes / s a device sends to its peers (ICI, NVLink one way)


TPU_CHIPS = {
    "v4": Chip("TPU v4", 32 * GiB, 275e12, 2, 3, 1200e9, 300e9),
    "v5e": Chip("TPU v5 lite", 16 * GiB, 197e12, 1, 2, 819e9, 200e9),
    "v5p": Chip("TPU v5", 95 * GiB, 459e12, 2, 3, 2765e9, 600e9),
    "v6e": Chip("TPU v6 lite", 32 * GiB, 918e12, 1, 2, 1640e9, 448e9),
}
GPU_CHIPS = {  # memory as the driver reports it (gpu_topology.SPECS); dense bf16 tensor-core peak (SXM)
    "h100": Chip("NVIDIA H100 80GB HBM3", 84_978_434_048, 989e12, 1, 1, 3350e9, 450e9),
    "h200": Chip("NVIDIA H200", 150_754_820_096, 989e12, 1, 1, 4800e9, 450e9),
    "a100": Chip("NVIDIA A100-SXM4-80GB", 85_198_045_184, 312e12, 1, 1, 2039e9, 300e9),
    "l4": Chip("NVIDIA L4", 24_152_899_584, 121e12, 1, 1, 300e9, 32e9),  # 24 GB, PCIe (no NVLink)
}
CHIPS = {chip.kind: chip for chip in (*TPU_CHIPS.values(), *GPU_CHIPS.values())}

# Where each figure above comes from. Link bandwidth is one direction, the chip's total over its links (half the
# "bidirectional ICI bandwidth per chip" Google publishes; half NVIDIA's bidirectional NVLink / PCIe figure): the
# per-axis share a collective actually gets is smaller, so a roofline built on it is a lower bound.
SOURCES = {
    "v4": "https://cloud.google.com/tpu/docs/v4 (275 TFLOPs bf16, 32 GiB, 1200 GBps HBM); the page gives no ICI "
          "figure: 300 GB/s one way is this project's assumption",
    "v5e": "https://cloud.google.com/tpu/docs/v5e (197 TFLOPs bf16, 16 GB, 819 GBps HBM, 400 GBps bidirectional "
           "ICI per chip)",
    "v5p": "https://cloud.google.com/tpu/docs/v5p (459 TFLOPs bf16, 95 GB, 2765 GBps HBM, 1200 GBps bidirectional "
           "ICI per chip)",
    "v6e": "https://cloud.google.com/tpu/docs/v6e (918 TFLOPs bf16, 32 GB, 1638 GBps HBM (1640e9 above, 0.1% "
           "over), 800 GBps bidirectional ICI per chip)",
    "h100": "https://www.nvidia.com/en-us/data-center/h100/ (H100 SXM: 989 TFLOPS dense bf16, 3.35 TB/s, NVLink "
            "900 GB/s bidirectional)",
    "h200": "https://www.nvidia.com/en-us/data-center/h200/ (989 TFLOPS dense bf16, 4.8 TB/s, NVLink 900 GB/s)",
    "a100": "https://www.nvidia.com/en-us/data-center/a100/ (A100 SXM 80GB: 312 TFLOPS bf16, 2039 GB/s, NVLink "
            "600 GB/s bidirectional)",
    "l4": "https://www.nvidia.com/en-us/data-center/l4/ (121 TFLOPS dense bf16 (242 with sparsity), 300 GB/s, PCIe "
          "Gen4 x16: 64 GB/s bidirectional)",
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
