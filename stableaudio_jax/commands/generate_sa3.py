"""``stableaudio-jax generate`` on a Stable Audio 3 model (a stored bundle of family ``sa3``): the same options, read
as SA3 reads them — ``--seconds`` sets each clip's length (the latent length follows it), ``--inpaint-keep`` the
seconds of ``--inpaint-audio`` to keep (the rest is generated), ``--init-noise-level`` audio-to-audio's start,
``--lora PATH[:STRENGTH]`` an SA3 adapter file (LoRA, DoRA, BoRA or their -XS forms) or an adapter a ``train`` LoRA
run stored, merged into the weights."""
from __future__ import annotations

import argparse

import numpy as np

DEFAULT_SECONDS = 120.0  # the reference's generate() default, capped at the model's length


def generate_regions(keep: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
    """The (start, end) seconds where ``keep`` (per sample) is False: what SA3 generates."""
    edges = np.flatnonzero(np.diff(np.r_[1, keep.astype(np.int8), 1]))
    return [(float(a) / sample_rate, float(b) / sample_rate) for a, b in zip(edges[::2], edges[1::2])]


def merged_loras(model, arguments: list[str]):
    """The model's weights with each ``PATH[:STRENGTH]`` merged in order: an SA3 adapter file (LoRA / DoRA / BoRA,
    -XS) or an adapter stored by a ``train`` LoRA run on an SA3 base (its DiT layers)."""
    from stableaudio_jax.convert.sa3_lora import apply_sa3_loras
    from stableaudio_jax.store import is_stored_model
    from stableaudio_jax.store.adapters import apply_adapters, load_lora, parse_lora_argument
    from stableaudio_jax.store.format import weights_sha256
    params, base_sha256 = model.params, weights_sha256(model.params)
    for path, strength in map(parse_lora_argument, arguments):
        if is_stored_model(path):
            dit = apply_adapters({"params": params["params"]["dit"]}, [(load_lora(path), strength)], base_sha256,
                                 model.source or "the SA3 model")
            params = {"params": dict(params["params"], dit=dit["params"])}
        else:
            params = apply_sa3_loras(params, [(path, strength)], model.denoiser.dit.scan_layers)
    return params


def run_sa3(args: argparse.Namespace, checkpoint: str, prompts: list[str]) -> tuple[list[np.ndarray], int]:
    """The clips for ``prompts`` and their sample rate."""
    import jax.numpy as jnp

    from stableaudio_jax.audio.io import load_audio
    from stableaudio_jax.inference.generation_inputs import keep_mask
    from stableaudio_jax.inference.sa3_pipeline import SA3Pipeline
    from stableaudio_jax.store.sa3 import load_sa3

    for option in ("cfg_rescale", "sigma_min", "sigma_max"):
        if getattr(args, option):
            raise ValueError(f"--{option.replace('_', '-')} is not an option of Stable Audio 3 models")
    model = load_sa3(checkpoint, dtype=getattr(jnp, args.dtype))
    if args.lora:
        model.params = merged_loras(model, args.lora)
    pipe = SA3Pipeline(model)
    rate, channels = pipe.sample_rate, pipe.vae.audio_channels
    longest = int(pipe.generation.max_frames) * pipe.vae.downsampling_ratio / rate
    seconds = args.seconds if args.seconds is not None else min(DEFAULT_SECONDS, longest)
    kwargs = {}
    if args.init_audio:
        kwargs.update(init_audio=load_audio(args.init_audio, rate, channels)[0][None],
                      init_noise_level=args.init_noise_level)
    if args.inpaint_audio:
        audio = load_audio(args.inpaint_audio, rate, channels)[0]
        kwargs.update(inpaint_audio=audio[None],
                      inpaint_regions=generate_regions(keep_mask(args.inpaint_keep, audio.shape[0], rate), rate))
    clips = pipe(prompts, [seconds] * len(prompts), seed=args.seed, steps=args.steps, sampler=args.sampler,
                 cfg_scale=args.cfg_scale, negative_prompt=args.negative_prompt, **kwargs)
    return clips, rate
