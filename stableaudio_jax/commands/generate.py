"""``stableaudio-jax generate``: prompt(s) → wav files (and spectrogram pictures)."""
from __future__ import annotations

import argparse
import os


CHECKPOINT_ENV = "STABLEAUDIO_JAX_CHECKPOINT"


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate audio from text prompts",
                       description="Generate audio from text with a stored text-to-audio model: converted "
                                   "(`convert`) or trained (`train` exports <workdir>/model), DiT or U-Net. "
                                   "Sampling defaults come from the model.")
    p.add_argument("prompt", nargs="+", help="one or more prompts (each makes --batch files)")
    p.add_argument("--checkpoint", help=f"stored text-to-audio model directory, or hf:OWNER/NAME[@REVISION] (a Hub "
                                        f"repo, converted once and cached: `convert --from hf:`) "
                                        f"(default: ${CHECKPOINT_ENV})")
    p.add_argument("--lora", action="append", metavar="PATH[:SCALE]",
                   help="a LoRA adapter (a LoRA `train` run's model/) merged into the denoiser at load time, its "
                        "effect times SCALE (default 1); repeat for several")
    p.add_argument("--out", default="out.wav", help="output file; several outputs get _<i> before the suffix")
    p.add_argument("--seconds", type=float, help="seconds_total: duration to generate (default: the whole window)")
    p.add_argument("--seconds-start", type=float, default=0.0, help="seconds_start conditioning")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's, 100)")
    p.add_argument("--cfg-scale", type=float,
                   help="classifier-free guidance scale s: uncond + s (cond - uncond), so s = 1 + w of the (1 + w) "
                        "cond - w uncond form; 1 = no guidance (default: the model's, 7)")
    p.add_argument("--cfg-rescale", type=float, help="CFG rescale phi in [0, 1] (default: the model's)")
    p.add_argument("--sampler", help="default: the model's (v: dpmpp-3m-sde, eps: ddim, rectified flow: euler); "
                                     "v: dpmpp-3m-sde, dpmpp-2m-sde, dpmpp-2m, ddim; eps: ddpm, ddim; rectified flow: "
                                     "euler, pingpong (few-step models: 1-8 steps with --cfg-scale 1)")
    p.add_argument("--sigma-min", type=float, help="v models: smallest noise level (default: the model's, 0.3)")
    p.add_argument("--sigma-max", type=float, help="v models: largest noise level (default: the model's, 500)")
    p.add_argument("--negative-prompt")
    p.add_argument("--seed", type=int, default=0,
                   help="noise seed: the same seed, prompt and settings give the same audio (default 0)")
    p.add_argument("--batch", type=int, default=1, help="variations per prompt")
    p.add_argument("--init-audio", help="audio-to-audio: start from this file")
    p.add_argument("--init-noise-level", type=float, default=1.0)
    p.add_argument("--inpaint-audio", help="inpainting/continuation: the audio to keep parts of")
    p.add_argument("--inpaint-keep", default="", help="seconds of --inpaint-audio to keep, e.g. 0:10,20:25")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    p.add_argument("--spectrogram", action="store_true", help="also write a spectrogram PNG per file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs and CI)")
    p.set_defaults(run=run)


def output_paths(out: str, count: int) -> list[str]:
    if count == 1:
        return [out]
    stem, suffix = os.path.splitext(out)
    return [f"{stem}_{i}{suffix or '.wav'}" for i in range(count)]


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    import jax.numpy as jnp
    from tqdm import tqdm

    from stableaudio_jax.audio.io import load_audio
    from stableaudio_jax.inference.generation_inputs import keep_mask
    from stableaudio_jax.inference.pipeline import TextToAudioPipeline

    checkpoint = args.checkpoint or os.environ.get(CHECKPOINT_ENV)
    if not checkpoint:
        raise ValueError(f"no model: pass --checkpoint DIR or set ${CHECKPOINT_ENV}")
    if args.batch < 1:
        raise ValueError(f"--batch is {args.batch}; expected >= 1")
    prompts = [p for p in args.prompt for _ in range(args.batch)]
    if not checkpoint.startswith("hf:") and _is_sa3(checkpoint):
        from stableaudio_jax.commands.generate_sa3 import run_sa3
        clips, rate = run_sa3(args, checkpoint, prompts)
        return _write(args, clips, rate)
    if checkpoint.startswith("hf:"):  # a Hub repo: the cached conversion (made on first use)
        pipe = TextToAudioPipeline.from_pretrained(checkpoint, dtype=getattr(jnp, args.dtype), loras=args.lora or ())
    else:
        pipe = TextToAudioPipeline.from_checkpoint(checkpoint, dtype=getattr(jnp, args.dtype),
                                                   loras=args.lora or ())
    kwargs = {}
    if args.inpaint_audio:
        audio, rate = load_audio(args.inpaint_audio)
        kwargs.update(inpaint_audio=audio, inpaint_audio_sample_rate=rate,
                      inpaint_mask=keep_mask(args.inpaint_keep, audio.shape[0], rate))
    if args.init_audio:
        audio, rate = load_audio(args.init_audio)
        kwargs.update(init_audio=audio, init_audio_sample_rate=rate, init_noise_level=args.init_noise_level)
    steps = args.steps or int(pipe.config.sampling.steps)
    bar = None if args.no_progress else tqdm(total=steps, desc="sampling", unit="step")
    try:
        audio = pipe.generate(prompts, negative_prompt=args.negative_prompt, seconds_start=args.seconds_start,
                              seconds_total=args.seconds, steps=steps, cfg_scale=args.cfg_scale,
                              cfg_rescale=args.cfg_rescale, sampler=args.sampler, sigma_min=args.sigma_min,
                              sigma_max=args.sigma_max, seed=args.seed,
                              progress=None if bar is None else (lambda _: bar.update(1)), **kwargs)
    finally:
        if bar is not None:
            bar.close()
    return _write(args, audio, pipe.sample_rate)


def _is_sa3(checkpoint: str) -> bool:
    from stableaudio_jax.store.format import StoreError
    from stableaudio_jax.store.sa3 import is_sa3
    try:
        return is_sa3(checkpoint)
    except (StoreError, FileNotFoundError):
        return False  # the SAO loader reports what is wrong with it


def _write(args: argparse.Namespace, clips, sample_rate: int) -> int:
    from stableaudio_jax.audio.io import write_audio, write_spectrogram_png
    for path, clip in zip(output_paths(args.out, len(clips)), clips):
        write_audio(path, clip, sample_rate)
        print(f"wrote {path} ({clip.shape[0] / sample_rate:.2f} s, {clip.shape[1]} channels)")
        if args.spectrogram:
            print(f"wrote {write_spectrogram_png(os.path.splitext(path)[0] + '.png', clip, sample_rate)}")
    return 0
