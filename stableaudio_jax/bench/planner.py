"""``bench sharding --find``: the fastest strategy that fits a target, and the smallest slice that trains a global
batch, searched with the compiler instead of the hardware.

The search space is every data x fsdp x tensor mesh of the target's devices (tensor up to ``max_tensor``: tensor
parallelism pays its collectives on every layer, so it is searched only when asked) crossed with a *memory
ladder*: the remat policies, optimizer-state and parameter dtypes in the order given, from the least to the most
memory-saving. For each mesh the planner keeps the first rung that fits (more recomputation or lower precision
only costs), ranks those by the roofline lower bound per example, and confirms the ranking top-down with the real
compile until one fits. A scanned DiT is screened with its 1-layer unrolled twin scaled by the depth (cheap, and
the only way to cost a scan), and the winner is costed exactly from its 1- and 2-layer twins; anything else is
screened with the real compile.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Sequence

from stableaudio_jax.bench import sharding, targets
from stableaudio_jax.bench.strategies import Strategy, apply, factorisations
from stableaudio_jax.bench.targets import Target

logger = logging.getLogger(__name__)
REMAT_LADDER = ("none", "dots_no_batch", "dots", "full")


class ScreeningError(RuntimeError):
    """A candidate strategy failed to compile for a reason other than memory: the search stops and says so."""


@dataclasses.dataclass
class Screened:
    strategy: Strategy
    memory: int                  # per-device bytes (an estimate for a scanned DiT)
    bound_seconds: float | None  # the roofline lower bound (what candidates are ranked by)
    fits: bool
    row: dict | None = None      # the real compile's row, once confirmed
    error: str | None = None
    xla_optimal_seconds: float | None = None  # XLA's own lower bound (TPU; None where unknown)

    @property
    def seconds_per_example(self) -> float:
        return (self.bound_seconds or float("inf")) / self.strategy.global_batch()

    def as_dict(self) -> dict:
        return {"strategy": self.strategy.as_dict(), "memory_estimate": self.memory, "fits_estimate": self.fits,
                "bound_seconds": self.bound_seconds, "compiled": self.row is not None,
                "xla_optimal_seconds": self.row["xla_optimal_seconds"] if self.row else self.xla_optimal_seconds,
                "memory": self.row["memory"]["total"] if self.row else None,
                "fits": self.row["fits"] if self.row else None, "error": self.error}


def valid_meshes(config, devices: int, max_tensor: int, global_batch: int | None) -> list[tuple[int, int, int]]:
    """Meshes whose tensor axis divides the heads and width, and whose batch axes divide ``global_batch``."""
    model = config.model
    heads = [int(model[k]) for k in ("num_heads", "kv_heads") if model.get(k)]
    width = int(model.get("embed_dim") or 1)
    out = []
    for mesh in factorisations(devices):
        tensor = mesh[2]
        if tensor > max_tensor or any(h % tensor for h in heads) or width % tensor:
            continue
        if global_batch is not None and global_batch % (mesh[0] * mesh[1]):
            continue
        out.append(mesh)
    return out


def ladder(config, remats: Sequence[str] | None, opt_dtypes: Sequence[str | None],
           param_dtypes: Sequence[str | None]) -> list[tuple[str | None, str | None, str | None]]:
    """(remat, optimizer dtype, parameter dtype) rungs, least memory-saving first."""
    if remats is None:
        remats = REMAT_LADDER if "remat" in config.model else (None,)
    return [(r, o, p) for r in remats for o in opt_dtypes for p in param_dtypes]


def screen(config, strategy: Strategy, target: Target) -> Screened:
    """Estimated memory and bound of one strategy (see the module docstring)."""
    try:
        if sharding.scanned_layers(apply(config, strategy)):
            est = sharding.unrolled_cost(config, strategy, target, quick=True)
            memory = est["memory"]["total"]
            bound = sharding.bound(est["cost"], est["traffic"], target)
            return Screened(strategy, memory, bound, targets.fits(memory, target) is not False,
                            xla_optimal_seconds=sharding.xla_lower_bound(est["cost"]["optimal_seconds"]))
        row = sharding.run_strategy(config, strategy, measure=False, target=target)
    except Exception as error:  # noqa: BLE001 - the TPU compiler refuses what does not fit with an exception
        required = sharding.out_of_memory(str(error))
        if required is None:  # anything else is a bug or a setting this model cannot take, not "does not fit"
            raise ScreeningError(f"screening {strategy.name} on {target.name} failed (not for want of memory): "
                                 f"{str(error).splitlines()[0][:500]}") from error
        return Screened(strategy, required, None, False, error=str(error).splitlines()[0][:500])
    fits = row["fits"] is not False
    return Screened(strategy, row["memory"]["total"], row["bound_seconds"], fits, row=row)


def find(config, target: Target, per_device_batch: int | Sequence[int] | None = None, global_batch: int | None = None,
         seconds: float | None = None, remats: Sequence[str] | None = None,
         opt_dtypes: Sequence[str | None] = (None,), param_dtypes: Sequence[str | None] = (None,),
         attention: str | None = None, max_tensor: int = 1, progress: bool = True) -> dict[str, Any]:
    """The fastest strategy that fits ``target`` by the compiler's bound per example (``best``: its full row, or
    None when nothing fits) and every screened candidate. ``per_device_batch`` may list several batches: each is
    searched like another mesh (a larger batch amortises the per-step weight traffic; it needs more memory)."""
    from tqdm import tqdm
    if per_device_batch is not None and global_batch is not None:
        raise ValueError(f"per-device batch {per_device_batch} and global batch {global_batch}: give one of them")
    batches = [None] if global_batch is not None else (
        [per_device_batch or 1] if isinstance(per_device_batch, int) or per_device_batch is None
        else list(per_device_batch))
    if target.chip is None:
        raise ValueError(f"target {target.name!r} ({target.devices[0].device_kind}): --find ranks strategies by the "
                         "roofline of a known chip; give a TPU slice or GPU node (e.g. tpu:v5p-8, gpu:h100x8)")
    meshes = valid_meshes(config, target.device_count, max_tensor, global_batch)
    if not meshes:
        raise ValueError(f"no data x fsdp x tensor mesh of {target.device_count} devices (tensor <= {max_tensor}) "
                         f"divides the global batch {global_batch} and the model's heads")
    rungs = ladder(config, remats, opt_dtypes, param_dtypes)
    screened: list[Screened] = []
    points = [(mesh, batch) for mesh in meshes for batch in batches]
    remaining = {point: iter(rungs) for point in points}

    def next_fit(point) -> Screened | None:
        """The (mesh, batch)'s next rung whose estimate fits (screening the ones that do not on the way)."""
        mesh, batch = point
        batch = batch or global_batch // (mesh[0] * mesh[1])
        for remat, opt, param in remaining[point]:
            candidate = screen(config, Strategy(mesh, batch, seconds, remat, None, attention, param, opt), target)
            screened.append(candidate)
            if candidate.fits and candidate.bound_seconds:
                return candidate
        return None

    pool = [c for c in tqdm(map(next_fit, points), total=len(points), desc=f"screening {target.name}",
                            unit="strategy", disable=not progress) if c is not None]
    best = None
    while pool and best is None:
        pool.sort(key=lambda c: c.seconds_per_example)
        candidate = pool.pop(0)
        row = confirm(config, candidate, target)
        if row["fits"] is not False:
            best = row
            continue
        # the estimate was short: the mesh's next rung takes its place
        logger.info("%s: the real compile needs %.2f GiB, more than the estimate", candidate.strategy.name,
                    row["memory"]["total"] / 2 ** 30)
        follow = next_fit((candidate.strategy.mesh, None if global_batch else candidate.strategy.per_device_batch))
        if follow is not None:
            pool.append(follow)
    return {"target": target.as_dict(), "best": best, "screened": [c.as_dict() for c in screened]}


def confirm(config, candidate: Screened, target: Target) -> dict:
    """The real compile of a screened candidate: its memory (and, for a scanned DiT, the exact cost from the 1-
    and 2-layer twins)."""
    row = candidate.row or sharding.run_strategy(config, candidate.strategy, measure=False, target=target,
                                                 unroll_cost=False)
    if candidate.row is None and "out_of_memory" not in row:  # a scanned DiT: the twins give the cost
        est = sharding.unrolled_cost(config, candidate.strategy, target)
        row.update(cost=est["cost"], collectives=est["collectives"], traffic=est["traffic"],
                   cost_method="unrolled at depth 1 and 2, extrapolated")
        sharding.finish_bounds(row, target)
    candidate.row = row
    return row


def smallest_slice(config, family: str, global_batch: int, sizes: Iterable[int] | None = None,
                   seconds: float | None = None, remats: Sequence[str] | None = None,
                   opt_dtypes: Sequence[str | None] = (None,), param_dtypes: Sequence[str | None] = (None,),
                   attention: str | None = None, max_tensor: int = 1, progress: bool = True) -> dict[str, Any]:
    """The smallest slice of ``family`` (``tpu:v5p``, ``gpu:h100``) on which some strategy trains
    ``global_batch``: slices in increasing size are tried with their most memory-saving strategy (fsdp over every
    device, the ladder's last rung); the first that fits is then searched for its fastest strategy."""
    tried = []
    for size in sizes or targets.slice_sizes(family):
        target = targets.resolve(targets.slice_name(family, size))
        meshes = valid_meshes(config, target.device_count, max_tensor, global_batch)
        if not meshes:
            tried.append({"target": target.name, "fits": False, "reason": "the global batch does not divide"})
            continue
        lean = max(meshes, key=lambda m: (m[1] * m[2], m[1]))  # the most sharded state
        remat, opt, param = ladder(config, remats, opt_dtypes, param_dtypes)[-1]
        batch = global_batch // (lean[0] * lean[1])
        candidate = screen(config, Strategy(lean, batch, seconds, remat, None, attention, param, opt), target)
        tried.append({"target": target.name, "fits": candidate.fits, "memory_estimate": candidate.memory,
                      "strategy": candidate.strategy.name})
        logger.info("%s: %s, %.2f GiB per device (estimate)", target.name, "fits" if candidate.fits else "does not fit",
                    candidate.memory / 2 ** 30)
        if candidate.fits:
            found = find(config, target, global_batch=global_batch, seconds=seconds, remats=remats,
                         opt_dtypes=opt_dtypes, param_dtypes=param_dtypes, attention=attention, max_tensor=max_tensor,
                         progress=progress)
            if found["best"] is not None:
                return dict(found, tried=tried)
    return {"target": None, "best": None, "screened": [], "tried": tried}
