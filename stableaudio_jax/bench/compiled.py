"""What a compiled (ahead-of-time or local) XLA executable says about itself: per-device memory, cost, collectives.

Every number here comes from the compiler, not from running anything: ``memory_analysis()`` (per-device bytes of
arguments, outputs, aliased donations and temporaries), ``cost_analysis()`` (FLOPs, bytes accessed and, on TPU,
XLA's optimal-seconds lower bound; on GPU, whose executables report none, XLA's HLO cost analysis of the optimized
modules) and the optimized HLO text, from which the collectives are read with the bytes their results hold and the
mesh axes their replica groups span (``traffic``: what each axis's links carry). A collective inside a ``while``
body (a scanned layer stack, a sampling scan) appears once in the text and is counted once, as ``cost_analysis``
counts the body once: unrolled layers give whole-step figures.
"""
from __future__ import annotations

import contextlib
import math
import re
import warnings
from typing import Any

import numpy as np

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
# "%name = <shape> <op>(" or "<op>-start(" (asynchronous pairs are counted at their start)
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%[\w.\-]+\s*=\s*(?P<shape>.+?)\s+(?P<op>" + "|".join(COLLECTIVES) +
                          r")(?P<start>-start)?\(")
_ARRAY = re.compile(r"\b(?P<dtype>[a-z]+[0-9]*(?:e[0-9]m[0-9](?:fn)?)?)\[(?P<dims>[0-9,]*)\]")


def array_bytes(shape: str) -> list[int]:
    """Bytes of each array in an HLO shape (``f32[8,512]{1,0}`` or a tuple of them); unknown dtypes: 4 bytes."""
    return [math.prod(int(d) for d in filter(None, a.group("dims").split(","))) * _DTYPE_BYTES.get(a.group("dtype"), 4)
            for a in _ARRAY.finditer(shape)]


def shape_bytes(shape: str) -> int:
    return sum(array_bytes(shape))


def result_bytes(op: str, shape: str, start: bool) -> int:
    """Bytes of a collective's result. Asynchronous starts return their operands too: ``all-gather-start``
    (operands, results), GPU's ``reduce-scatter-start`` ((operands), (results)), ``collective-permute-start``
    (operand, result, contexts): count the results only (an ``all-reduce-start``'s tuple is its results)."""
    sizes = array_bytes(shape)
    if start and len(sizes) > 1 and (op == "all-gather" or shape.lstrip().startswith("((")):
        return sum(sizes[len(sizes) // 2:])
    if start and op == "collective-permute" and len(sizes) > 1:
        return sizes[1]
    return sum(sizes)


_GROUPS_LISTED = re.compile(r"replica_groups=\{\{(?P<first>[0-9,]*)\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(?P<dims>[0-9,]+)\]<=")
_GROUPS_MESH = re.compile(r"replica_groups=mesh\[(?P<axes>[^\]]*)\][^{]*\{(?P<used>[^}]*)\}")


def group_size(line: str) -> int | None:
    """Devices per replica group of a collective instruction (listed, iota or named-mesh form); None if absent."""
    if match := _GROUPS_LISTED.search(line):
        return len(match.group("first").split(","))
    if match := _GROUPS_IOTA.search(line):
        return int(match.group("dims").split(",")[-1])
    if match := _GROUPS_MESH.search(line):
        sizes = dict(re.findall(r"'([^']+)'=(\d+)", match.group("axes")))
        return math.prod(int(sizes[a]) for a in re.findall(r"'([^']+)'", match.group("used")) if a in sizes)
    return None


def moved_bytes(op: str, result_bytes: int, group: int | None) -> float:
    """Bytes each device sends for one collective under the ring algorithm, from its result size and group size
    (an unknown group counts as a large one)."""
    share = 1.0 if not group else (group - 1) / group
    if op == "all-reduce":
        return 2 * result_bytes * share
    if op == "reduce-scatter":  # the result is the shard
        return result_bytes * (group - 1 if group else 1)
    return result_bytes * (share if op in ("all-gather", "all-to-all") else 1.0)


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """``{kind: {"count", "bytes", "moved"}}`` of the collectives in optimized HLO text (every kind present, zeros
    too): ``bytes`` their results hold, ``moved`` what each device sends (``moved_bytes``)."""
    found = {kind: {"count": 0, "bytes": 0, "moved": 0} for kind in COLLECTIVES}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            op = match.group("op")
            entry, size = found[op], result_bytes(op, match.group("shape"), bool(match.group("start")))
            entry["count"] += 1
            entry["bytes"] += size
            entry["moved"] += int(moved_bytes(op, size, group_size(line)))
    return found


_IOTA_FULL = re.compile(r"replica_groups=\[(?P<groups>[0-9,]+)\]<=\[(?P<shape>[0-9,]+)\](?:T\((?P<perm>[0-9,]+)\))?")
_PAIRS = re.compile(r"source_target_pairs=\{(?P<pairs>[0-9,{}]*)\}")


def first_group(line: str) -> list[int] | None:
    """The partition ids of a collective's first replica group (listed or iota form), or of every
    source-target pair of a ``collective-permute``; None where the instruction names none (every device)."""
    if match := _GROUPS_LISTED.search(line):
        return [int(i) for i in match.group("first").split(",") if i]
    if match := _IOTA_FULL.search(line):
        ints = lambda text: [int(i) for i in text.split(",")]  # noqa: E731
        ids = np.arange(math.prod(ints(match.group("shape")))).reshape(ints(match.group("shape")))
        if match.group("perm"):
            ids = ids.transpose(ints(match.group("perm")))
        return ids.reshape(ints(match.group("groups")))[0].tolist()
    if match := _PAIRS.search(line):
        return sorted({int(i) for i in re.findall(r"\d+", match.group("pairs"))})
    return None


def group_axes(ids: list[int] | None, shape: tuple[int, ...], names: tuple[str, ...]) -> str:
    """The mesh axes a group of partition ids varies along, joined by "+" (partition i is the mesh's i-th device
    in row-major order, as jit assigns them); no ids: every axis larger than 1."""
    if ids is None:
        return "+".join(n for n, s in zip(names, shape) if s > 1) or "none"
    coords = np.array(np.unravel_index(ids, shape)).T
    axes = [n for i, n in enumerate(names) if len(set(coords[:, i])) > 1]
    if not axes and len(ids) > 1:
        raise ValueError(f"replica group {ids} varies along no axis of mesh {dict(zip(names, shape))}")
    return "+".join(axes) or "none"


def traffic(hlo_text: str, shape: tuple[int, ...], names: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """``{axes: {"count", "moved"}}``: the bytes each device sends (``moved_bytes``) per set of mesh axes the
    collectives run over (``group_axes``), so that each is charged to those axes' links."""
    found: dict[str, dict[str, int]] = {}
    for line in hlo_text.splitlines():
        if match := _INSTRUCTION.match(line):
            op = match.group("op")
            size = result_bytes(op, match.group("shape"), bool(match.group("start")))
            entry = found.setdefault(group_axes(first_group(line), shape, names), {"count": 0, "moved": 0})
            entry["count"] += 1
            entry["moved"] += int(moved_bytes(op, size, group_size(line)))
    return found


def memory(compiled) -> dict[str, int]:
    """Per-device bytes: arguments, outputs, donated (aliased) bytes, temporaries and their total, as XLA plans
    them (total = arguments + outputs - aliased + temporaries), and ``host``: the same total of what the program
    keeps in host memory (e.g. an EMA with ``training.ema.place=host``), not counted in ``total``."""
    stats = compiled.memory_analysis()
    if stats is None:
        raise RuntimeError("this backend's compiled executable reports no memory analysis")
    out = {"arguments": int(stats.argument_size_in_bytes), "outputs": int(stats.output_size_in_bytes),
           "aliased": int(stats.alias_size_in_bytes), "temporaries": int(stats.temp_size_in_bytes)}
    out["total"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
    out["host"] = sum(int(getattr(stats, f"host_{name}_size_in_bytes", 0) or 0) * sign
                      for name, sign in (("argument", 1), ("output", 1), ("alias", -1), ("temp", 1)))
    return out


def cost(compiled) -> dict[str, Any]:
    """FLOPs, bytes accessed and (TPU) optimal seconds per device; ``None`` for what the backend does not give.
    XLA's GPU executables report no cost analysis: there, XLA's HLO cost analysis is run on the optimized
    (partitioned, fused) modules the GPU compiler produced, which hold every recomputation remat asks for."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
        analysis = analysis[0] if analysis else None
    analysis = analysis or _optimized_module_cost(compiled)
    pick = lambda key: float(analysis[key]) if key in analysis else None  # noqa: E731
    return {"flops": pick("flops"), "bytes_accessed": pick("bytes accessed"),
            "optimal_seconds": pick("optimal_seconds")}


# cuBLAS / cuDNN calls: HloCostAnalysis counts no FLOPs in a custom call, so a module with them is undercounted
_LIBRARY_CALL = re.compile(r'custom_call_target="__(cublas|cudnn)')


def library_calls(hlo_text: str) -> str | None:
    """Why a GPU module's cost is not given: it calls cuBLAS / cuDNN (e.g. with Triton GEMMs switched off),
    whose FLOPs XLA's cost analysis does not count; None when it calls neither."""
    if match := _LIBRARY_CALL.search(hlo_text):
        return (f"no cost: the optimized module calls {match.group(1)}, whose FLOPs XLA's cost analysis does not "
                "count")
    return None


def _optimized_module_cost(compiled) -> dict[str, float]:
    """``flops`` and ``bytes accessed`` of the executable's optimized HLO modules (empty where there are none)."""
    import jax
    from jax._src.lib import _jax
    try:
        modules = compiled.runtime_executable().hlo_modules()
    except (AttributeError, NotImplementedError):
        return {}
    if library_calls(compiled.as_text()):  # an undercount is worse than no figure: the bound would be too low
        return {}
    client = jax.devices("cpu")[0].client
    totals: dict[str, float] = {}
    for module in modules:
        for key, value in _jax.hlo_module_cost_analysis(client, module).items():
            if key in ("flops", "bytes accessed"):
                totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def describe(compiled, mesh=None) -> dict[str, Any]:
    """Memory, cost and collectives of one compiled executable, and (given its mesh) their traffic per axis."""
    out = {"memory": memory(compiled), "cost": cost(compiled), "collectives": collectives(compiled.as_text())}
    if out["cost"]["flops"] is None and (note := library_calls(compiled.as_text())):
        out["cost_note"] = note
    if mesh is not None:
        out["traffic"] = traffic(compiled.as_text(), tuple(mesh.devices.shape), tuple(mesh.axis_names))
    return out


@contextlib.contextmanager
def without_persistent_cache():
    """Compiling for devices this process has no client for (an ahead-of-time target): such executables cannot
    be read back from JAX's persistent compilation cache, so it is switched off (and its read warning muted,
    since JAX decides once per process whether the cache is in use)."""
    import jax
    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Error reading persistent compilation cache entry")
            yield
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)
