"""What a compiled (ahead-of-time or local) XLA executable says about itself: per-device memory, cost, collectives.

Every number here comes from the compiler, not from running anything: ``memory_analysis()`` (per-device bytes of
arguments, outputs, aliased donations and temporaries), ``cost_analysis()`` (FLOPs, bytes accessed and, on TPU,
XLA's optimal-seconds lower bound) and the optimized HLO text, from which the collectives are read with the bytes
their results hold. A collective inside a ``while`` body (a scanned layer stack, a sampling scan) appears once in
the text and is counted once, as ``cost_analysis`` counts the body once: unrolled layers give whole-step figures.
"""
from __future__ import annotations

import re
from typing import Any

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
# "%name = <shape> <op>(" or "<op>-start(" (asynchronous pairs are counted at their start)
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%[\w.\-]+\s*=\s*(?P<shape>.+?)\s+(?P<op>" + "|".join(COLLECTIVES) +
                          r")(?:-start)?\(")
_ARRAY = re.compile(r"\b(?P<dtype>[a-z]+[0-9]*(?:e[0-9]m[0-9](?:fn)?)?)\[(?P<dims>[0-9,]*)\]")


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO result shape (``f32[8,512]{1,0}`` or a tuple of them); unknown dtypes count as 4 bytes."""
    total = 0
    for array in _ARRAY.finditer(shape):
        count = 1
        for dim in filter(None, array.group("dims").split(",")):
            count *= int(dim)
        total += count * _DTYPE_BYTES.get(array.group("dtype"), 4)
    return total


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """``{kind: {"count", "bytes"}}`` of the collectives in optimized HLO text (every kind present, zeros too)."""
    found = {kind: {"count": 0, "bytes": 0} for kind in COLLECTIVES}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            entry = found[match.group("op")]
            entry["count"] += 1
            entry["bytes"] += shape_bytes(match.group("shape"))
    return found


def memory(compiled) -> dict[str, int]:
    """Per-device bytes: arguments, outputs, donated (aliased) bytes, temporaries and their total, as XLA plans
    them (total = arguments + outputs - aliased + temporaries)."""
    stats = compiled.memory_analysis()
    if stats is None:
        raise RuntimeError("this backend's compiled executable reports no memory analysis")
    out = {"arguments": int(stats.argument_size_in_bytes), "outputs": int(stats.output_size_in_bytes),
           "aliased": int(stats.alias_size_in_bytes), "temporaries": int(stats.temp_size_in_bytes)}
    out["total"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
    return out


def cost(compiled) -> dict[str, Any]:
    """FLOPs, bytes accessed and (TPU) optimal seconds per device; ``None`` for what the backend does not give."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
        analysis = analysis[0] if analysis else None
    analysis = analysis or {}
    pick = lambda key: float(analysis[key]) if key in analysis else None  # noqa: E731
    return {"flops": pick("flops"), "bytes_accessed": pick("bytes accessed"),
            "optimal_seconds": pick("optimal_seconds")}


def describe(compiled) -> dict[str, Any]:
    """Memory, cost and collectives of one compiled executable."""
    return {"memory": memory(compiled), "cost": cost(compiled), "collectives": collectives(compiled.as_text())}
