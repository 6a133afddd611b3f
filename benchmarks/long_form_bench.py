"""Long-form generation measured: a Stable Audio 2.0 shaped window (285 s, 6,144 latent frames) generated end to end
through ``TextToAudioPipeline`` with the full-size Oobleck VAE (chunked decode) and a depth-reduced DiT, on whatever
devices JAX sees. Random weights (Stability never released SA 2.0's); what is measured is time and memory.

  python benchmarks/long_form_bench.py --out docs/results/long_form_cpu.json            # depth 2, 8 steps
  python benchmarks/long_form_bench.py --depth 24 --steps 100 --out docs/results/long_form_gpu.json  # full size

Reported: seconds per stage (text encoding, the sampling scan, the chunked VAE decode; compile excluded by a
warm-up run at the same shapes), seconds of audio per second, and the process's peak resident memory (host RSS:
on CPU that is the device memory too).
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time

import numpy as np
from common import environment, random_text_to_audio, write_report

PROMPT = "slow evolving ambient pads with distant piano, 70 bpm"


def clap_encoder(directory: str):
    """A random CLAP text encoder at Stable Audio 2.0's feature width (768), one layer: the conditioner's cost is
    not what this measures."""
    import jax
    import jax.numpy as jnp
    from tokenizers import ByteLevelBPETokenizer

    from stableaudio_jax.models.clap import ClapTextEncoder
    from stableaudio_jax.store.clap_text import ClapText
    from stableaudio_jax.store.clap_tokenizer import ClapTokenizer
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator([PROMPT] * 10, vocab_size=300, min_frequency=1,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    trainer.save_model(directory)
    module = ClapTextEncoder(vocab_size=300, width=768, num_layers=1, num_heads=12, intermediate_size=3072)
    params = jax.jit(lambda k: module.init(k, jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), bool)))(
        jax.random.key(0))
    return ClapText(module, params, ClapTokenizer.from_directory(directory), source="random CLAP")


def build_pipeline(depth: int, dtype: str, directory: str):
    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.inference.pipeline import TextToAudioPipeline
    config = load_config("configs/dit.py:sa2", [f"--config.model.depth={depth}", "--config.model.scan_layers=false"])
    frames = config.audio.sample_size // 2048
    bundle = random_text_to_audio(config, clap_encoder(directory), 768, "sa2", dtype)
    return TextToAudioPipeline(bundle), frames


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=2, help="DiT layers (SA 2.0: 24)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=285.0)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        pipe, frames = build_pipeline(args.depth, args.dtype, directory)
        run = dict(prompts=[PROMPT], seconds_total=args.seconds, steps=args.steps, cfg_scale=7.0, seed=0)
        start = time.perf_counter()
        pipe.generate(**run)  # compiles every stage at these shapes
        first = time.perf_counter() - start
        timings: dict = {}
        start = time.perf_counter()
        audio = pipe.generate(**run, timings=timings)
        total = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux
    seconds = audio.shape[1] / pipe.sample_rate
    result = {
        "benchmark": "long_form", "window_seconds": pipe.window_seconds, "latent_frames": frames,
        "audio_seconds": seconds, "dit_depth": args.depth, "steps": args.steps, "dtype": args.dtype,
        "first_call_seconds": first, "seconds": total, "stage_seconds": timings,
        "sampling_seconds_per_step": timings["sampling_s"] / args.steps,
        "audio_seconds_per_second": seconds / total, "peak_rss_gib": peak_gib,
        "finite": bool(np.isfinite(audio).all()), "shape": list(audio.shape),
    }
    write_report(dict(result, environment=environment(with_torch=False)), args.out)
    print(f"{seconds:.1f} s of audio in {total:.1f} s ({seconds / total:.2f} x real time; stages {timings}); "
          f"peak RSS {peak_gib:.1f} GiB; first call {first:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
