"""The ``generate`` workload of ``bench sharding``: text-to-audio latency of one batch — the conditioning, the
sampling scan and the autoencoder's decode in chunks — compiled for a target, with per-device memory and a
whole-run cost. Stable Audio 1/2/Open denoisers: the objective's default sampler, classifier-free guidance as one
batched call per step, the VAE decoded in ``models.chunked_vae``'s chunks. Stable Audio 3 (``configs/sa3.py``): as
``SA3Pipeline`` generates, on SA3's time grid with the DiT's padding mask (a length bucket's padded frames) and the
sampler and guidance of the config's ``generation`` section (guided only when its cfg_scale is not 1: the
post-trained models sample with ping-pong at 8 steps, unguided), the SAME decoder in its config's chunks.

XLA's cost analysis counts a ``lax.scan`` body once, and generation nests two: the sampler's steps around the
denoiser's scanned layers. The cost is therefore fitted from small unrolled compiles: the sampler at 1 and 2 steps
around the denoiser unrolled at depth 1 and 2 (four compiles), a cost bilinear in (depth, steps) evaluated at the
real ones; the decode is one chunk's compile times the number of chunks. The memory is the real program's: the
sampler as it runs (scanned layers; 2 steps: a loop's memory does not grow with its trip count) and one decode
chunk.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from stableaudio_jax.bench import compiled as analysis
from stableaudio_jax.bench import targets
from stableaudio_jax.bench.strategies import Strategy, apply, apply_for_target, frames_per_second, text_shape
from stableaudio_jax.bench.targets import Target

CFG_SCALE = 7.0
SA3_TYPE = "sa3_dit"  # config.model.type of a Stable Audio 3 DiT
LAYERED = ("dit", SA3_TYPE)  # denoisers whose layer stack the cost fit unrolls at depth 1 and 2


def _mesh(strategy: Strategy, target: Target):
    from stableaudio_jax.parallel.mesh import resolve_mesh_shape
    return targets.mesh(resolve_mesh_shape(strategy.mesh, target.device_count), target)


def _compile(fn, args, mesh, rules, in_shardings, out_sharding):
    with analysis.without_persistent_cache(), jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return jax.jit(fn, in_shardings=in_shardings, out_shardings=out_sharding).lower(*args).compile()


def compile_sampler(config, strategy: Strategy, target: Target, steps: int):
    """The conditioning + sampling scan for ``strategy`` (batch = its global batch, length = its seconds)."""
    from stableaudio_jax.parallel.sharding import normalize_rules, param_shardings
    from stableaudio_jax.training import diffusion_steps
    from stableaudio_jax.training.loop import abstract_with_shardings
    config = apply_for_target(config, strategy, target)
    mesh, rules = _mesh(strategy, target), normalize_rules(config.sharding_rules)
    length, width = text_shape(config)
    run = diffusion_steps.build(config, length, width)
    model = run.model
    batch, frames = strategy.global_batch(), int(config.training.crop_frames)
    example = diffusion_steps.example_batch(run)
    boxed = jax.eval_shape(lambda k: model.init(k, example["latents"], example["text_embeddings"],
                                                example["text_mask"]), jax.random.key(0))
    shardings = param_shardings(boxed, mesh, rules)
    rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    whole = NamedSharding(mesh, PartitionSpec())
    abstract = lambda shape, dtype=jnp.float32: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
    if config.model.type == SA3_TYPE:  # the per-clip input: the padding mask
        generate, per_clip = sa3_generate(model, config.generation, steps), abstract((batch, frames), bool)
    else:  # seconds_start
        generate, per_clip = sao_generate(model, config.diffusion.objective, steps), abstract((batch,))
    args = (abstract_with_shardings(nn.unbox(boxed), shardings), abstract((batch, frames, run.latent_channels)),
            jax.eval_shape(lambda: jax.random.key(0)), abstract((batch, length, width)),
            abstract((batch, length), bool), per_clip, abstract((batch,)))
    in_shardings = (shardings, rows, whole, rows, rows, rows, rows)
    return _compile(generate, args, mesh, rules, in_shardings, rows), config


def sao_generate(model, objective: str, steps: int):
    """``generate(params, noise, rng, text, mask, seconds_start, seconds_total)`` of a Stable Audio 1/2/Open
    denoiser: the objective's default sampler, classifier-free guidance at ``CFG_SCALE``."""
    from stableaudio_jax.diffusion.samplers import DEFAULT_SAMPLERS, sample

    def generate(params, noise, rng, text, mask, start, total):
        cond = model.condition(params, text, mask, start, total)
        return sample(lambda x, t: model.guided(params, x, t, cond, CFG_SCALE), noise, rng, objective=objective,
                      sampler=DEFAULT_SAMPLERS[objective], steps=steps)
    return generate


def sa3_generate(model, generation, steps: int):
    """``generate(params, noise, rng, text, mask, padding_mask, seconds_total)`` of an SA3 model
    (``models.sa3_conditioning.SA3Conditioned``) as ``SA3Pipeline`` samples it."""
    from stableaudio_jax.inference.sa3 import generate_latents
    cfg, apg = float(generation.cfg_scale), float(generation.apg_scale)

    def generate(params, noise, rng, text, mask, padding, total):
        cond = model.condition(params, text, mask, None, total)
        velocity = lambda x, t, cross, g, local, m: model.denoiser.apply(  # noqa: E731
            params["denoiser"], x, t, cross, g, local, m)
        return generate_latents(velocity, noise, rng, cond["cross_attn_cond"], cond["global_cond"], padding,
                                steps=steps, sampler=str(generation.sampler), cfg_scale=cfg, apg_scale=apg,
                                guided=cfg != 1.0)
    return generate


def guidance(config) -> dict:
    """What the sampler of ``compile_sampler`` runs: its name and whether each step is a guided (doubled) call."""
    if config.model.type == SA3_TYPE:
        return {"sampler": str(config.generation.sampler), "cfg": float(config.generation.cfg_scale) != 1.0}
    from stableaudio_jax.diffusion.samplers import DEFAULT_SAMPLERS
    return {"sampler": DEFAULT_SAMPLERS[config.diffusion.objective], "cfg": True}


# one decode chunk compile per (target, mesh, batch, VAE): it does not depend on the clip's length (only the number
# of chunks does), and it is the slowest compile of the workload (~8 min for SAO's decoder on a TPU target here)
_DECODE_CHUNKS: dict[tuple, Any] = {}


def compile_decode_chunk(config, strategy: Strategy, target: Target):
    """One chunk of the chunked VAE decode (``chunk + 2 overlap`` latent frames) and the number of chunks."""
    config = apply(config, strategy)
    frames = int(config.training.crop_frames)
    dtype = jnp.dtype(config.get("dtype", "float32"))
    vae, chunk, overlap = autoencoder(config, dtype)
    window = min(frames, chunk + 2 * overlap)
    chunks = 1 if frames <= window else math.ceil(frames / chunk)
    key = (target.name, tuple(strategy.mesh), strategy.global_batch(), window, str(dtype), repr(vae),
           repr(config.sharding_rules))
    if key not in _DECODE_CHUNKS:
        _DECODE_CHUNKS[key] = _compile_decode(vae, config, strategy, target, window)
    return _DECODE_CHUNKS[key], chunks


def autoencoder(config, dtype) -> tuple[nn.Module, int, int]:
    """The config's autoencoder and its decode chunking (chunk, overlap in latent frames): an SA3 config's SAME
    (``config.autoencoder``, chunked as its config's ``chunking``), else ``config.vae`` in ``models.chunked_vae``'s
    default chunks."""
    if config.model.type == SA3_TYPE:
        from stableaudio_jax.config_loader import load_config
        from stableaudio_jax.models.same import same_from_config
        same = load_config(config.autoencoder)
        return same_from_config(same.model, dtype=dtype), int(same.chunking.chunk_size), int(same.chunking.overlap)
    from stableaudio_jax.models.chunked_vae import DEFAULT_CHUNK_SIZE, DEFAULT_OVERLAP
    from stableaudio_jax.store.builders import vae_from_config
    return vae_from_config(config.vae, dtype=dtype), DEFAULT_CHUNK_SIZE, DEFAULT_OVERLAP


def _compile_decode(vae, config, strategy: Strategy, target: Target, window: int):
    from stableaudio_jax.parallel.sharding import normalize_rules, param_shardings
    from stableaudio_jax.training.loop import abstract_with_shardings
    mesh, rules = _mesh(strategy, target), normalize_rules(config.sharding_rules)
    audio = jax.ShapeDtypeStruct((1, window * vae.downsampling_ratio, vae.audio_channels), jnp.float32)
    boxed = jax.eval_shape(lambda a: vae.init(jax.random.key(0), a, sample=False), audio)
    shardings = param_shardings(boxed, mesh, rules)
    rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    latents = jax.ShapeDtypeStruct((strategy.global_batch(), window, vae.latent_dim), jnp.float32)
    decode = lambda p, z: vae.apply(p, z, method=type(vae).decode)  # noqa: E731
    return _compile(decode, (abstract_with_shardings(nn.unbox(boxed), shardings), latents), mesh, rules,
                    (shardings, rows), rows)


def bilinear(values: dict[tuple[int, int], float | None], depth: int, steps: int) -> float | None:
    """``a + b d + c s + e d s`` through the values at (d, s) in {1, 2}^2, evaluated at (depth, steps)."""
    if any(v is None for v in values.values()):
        return None
    v11, v21, v12, v22 = (values[k] for k in ((1, 1), (2, 1), (1, 2), (2, 2)))
    e = v22 - v21 - v12 + v11
    b, c = v21 - v11 - e, v12 - v11 - e
    return v11 - b - c - e + b * depth + c * steps + e * depth * steps


COLLECTIVE_FIELDS = ("count", "bytes", "moved")


def _known(key: str, value: float | None) -> float | None:
    """A cost figure, with XLA's negative (unknown) ``optimal_seconds`` as None so that no fit or sum uses it."""
    return None if key == "optimal_seconds" and value is not None and value < 0 else value


def _summed(a: dict, b: dict, fields) -> dict:
    """Two ``{key: {field: n}}`` tables added key by key (a key missing from one counts zero)."""
    return {key: {f: a.get(key, {}).get(f, 0) + b.get(key, {}).get(f, 0) for f in fields} for key in sorted({*a, *b})}


def run_generation(config, strategy: Strategy, target: Target, steps: int = 100) -> dict[str, Any]:
    """One row of the generate workload: memory of the real sampler and of a decode chunk, the whole-run cost
    (sampling fitted from small unrolled compiles, decode = chunks x one chunk) and its bound."""
    # the loop's memory does not grow with its trip count, and the TPU compiler unrolls short loops (100 steps
    # around 24 scanned layers took it over 30 min on 2 cores): the memory comes from a 2-step sampler
    sampler, applied = compile_sampler(config, strategy, target, min(steps, 2))
    mesh = _mesh(strategy, target)
    decoder, chunks = compile_decode_chunk(config, strategy, target)
    layered = applied.model.type in LAYERED
    depth = int(applied.model.depth) if layered else 1
    # an unrolled DiT of depth 1 or 2 is its own twin at the sampler's step count: that program is compiled once
    own_twin = (depth, min(steps, 2)) if layered and not applied.model.get("scan_layers") else None
    small = {}
    for layers, n in ((1, 1), (2, 1), (1, 2), (2, 2)):
        if (layers, n) == own_twin:
            small[(layers, n)] = analysis.describe(sampler, mesh)
            continue
        twin = apply(config, strategy)
        if layered:
            twin.model.depth, twin.model.scan_layers = layers, False
        small[(layers, n)] = analysis.describe(compile_sampler(twin, dataclasses.replace(strategy, scan_layers=False),
                                                               target, n)[0], mesh)
    if not layered:  # no layer scan to fit: the (1, s) and (2, s) compiles are the same program
        depth = 1
    fit = lambda get: bilinear({k: get(v) for k, v in small.items()}, depth, steps)  # noqa: E731
    fitted = lambda name, fields: {  # noqa: E731  (per collective kind, or per mesh axes)
        key: {f: int(fit(lambda d: d[name].get(key, dict.fromkeys(fields, 0))[f])) for f in fields}
        for key in sorted({k for d in small.values() for k in d[name]})}
    sampling = ({key: fit(lambda d: _known(key, d["cost"][key])) for key in small[(1, 1)]["cost"]},
                fitted("collectives", COLLECTIVE_FIELDS), fitted("traffic", ("count", "moved")))
    decoded = analysis.describe(decoder, mesh)
    decoding = ({key: None if _known(key, value) is None else chunks * value for key, value in decoded["cost"].items()},
                *({key: {f: chunks * v for f, v in c.items()} for key, c in decoded[name].items()}
                  for name in ("collectives", "traffic")))
    cost = {key: None if sampling[0].get(key) is None or decoding[0][key] is None
            else sampling[0][key] + decoding[0][key] for key in decoding[0]}
    collectives = _summed(sampling[1], decoding[1], COLLECTIVE_FIELDS)
    traffic = targets.with_bandwidth(_summed(sampling[2], decoding[2], ("count", "moved")), mesh, target)
    parts = {name: targets.roofline_seconds(part[0], targets.with_bandwidth(part[2], mesh, target), target)
             if part[0]["flops"] is not None else None for name, part in (("sampling", sampling), ("decode", decoding))}
    memory = {"sampler": analysis.memory(sampler), "decode_chunk": analysis.memory(decoder)}
    peak = max(m["total"] for m in memory.values())
    frames = int(applied.training.crop_frames)
    seconds_audio = frames / frames_per_second(applied)
    # the phases run one after the other: a roofline of the summed counts would let the compute-bound decode hide
    # under the memory-bound sampling steps
    bound = None if None in parts.values() else sum(parts.values())
    return {"workload": "generate", "strategy": strategy.as_dict(), "target": target.as_dict(),
            "devices": target.device_count, "frames": frames, "audio_seconds": seconds_audio, "steps": steps,
            **guidance(applied), "decode_chunks": chunks, "memory": dict(memory["sampler"], total=peak, parts=memory),
            "fits": targets.fits(peak, target), "cost": cost, "collectives": collectives, "traffic": traffic,
            "bound_parts": parts,
            "cost_method": "sampler: bilinear fit of unrolled (depth, steps) in {1,2}^2 compiles; decode: chunks x "
                           "one chunk", "bound_seconds": bound, "xla_optimal_seconds": cost["optimal_seconds"]
            if cost["optimal_seconds"] is not None and cost["optimal_seconds"] >= 0 else None,
            "mfu_at_bound": None}
