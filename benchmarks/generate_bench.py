"""End-to-end generation benchmark: our TextToAudioPipeline against diffusers' StableAudioPipeline, same random
modules, same steps, same device, same run.

  python benchmarks/generate_bench.py --steps 100 --dtype bfloat16 --out docs/results/generate_gpu.json
  python benchmarks/generate_bench.py --config.model.depth=2 --frames 128 --steps 10 --t5-layers 2 \
      --dtype float32 --out docs/results/generate_cpu.json        # a CPU-sized run of the same code path

The architecture is ``configs/dit.py:sao`` (override with --config.*), the SAO VAE and a t5-base-sized T5, all with
random weights built as diffusers/transformers modules and converted by our converters. Our side is split into
T5 encoding, the sampling scan (DPM-Solver++ 2M with batched CFG, plus 3M-SDE for reference) and the VAE decode;
diffusers runs the same deterministic DPM-Solver++(2M) (its EDM scheduler with SAO's atan noise conditioning).
Whole generations are timed as ``--pairs`` interleaved pairs (ours, diffusers, ...) after a warm-up pair; the
figure is the per-pair ratio diffusers seconds / ours (median and min-max), and every pair keeps our stage times.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time

import numpy as np
from common import MIN_DOC_PAIRS, environment, interleaved_pairs, median_seconds, write_report

from stableaudio_jax.config_loader import load_config, split_override_args
from stableaudio_jax.store import resolve_conditioning

PROMPT = "warm analog synth arpeggio with soft drums, 120 bpm"


def build_modules(model_cfg, vae_cfg, frames: int, t5_layers: int, directory: str):
    """Random torch modules of the given sizes, saved as a diffusers pipeline folder (+ a sentencepiece model)."""
    import torch
    from diffusers import AutoencoderOobleck, StableAudioDiTModel
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel
    from transformers import T5Config, T5EncoderModel

    from stableaudio_jax.store.tokenizers import train_sentencepiece
    torch.manual_seed(0)
    head_dim = model_cfg.embed_dim // model_cfg.num_heads
    cond = model_cfg.cond_token_dim
    parts = dict(
        vae=AutoencoderOobleck(encoder_hidden_size=vae_cfg.channels, downsampling_ratios=list(vae_cfg.strides),
                               channel_multiples=list(vae_cfg.c_mults), decoder_channels=vae_cfg.channels,
                               decoder_input_channels=vae_cfg.latent_dim, audio_channels=2),
        transformer=StableAudioDiTModel(sample_size=frames, in_channels=model_cfg.io_channels,
                                        num_layers=model_cfg.depth, attention_head_dim=head_dim,
                                        num_attention_heads=model_cfg.num_heads,
                                        num_key_value_attention_heads=cond // head_dim,
                                        out_channels=model_cfg.io_channels, cross_attention_dim=cond,
                                        global_states_input_dim=model_cfg.global_cond_dim,
                                        cross_attention_input_dim=cond),
        text_encoder=T5EncoderModel(T5Config(vocab_size=32128, d_model=cond, d_kv=64, d_ff=4 * cond,
                                             num_layers=t5_layers, num_heads=cond // 64)),
        projection_model=StableAudioProjectionModel(text_encoder_dim=cond, conditioning_dim=cond, min_value=0,
                                                    max_value=512))
    for name, module in parts.items():
        module.eval().save_pretrained(f"{directory}/{name}")
    train_sentencepiece([PROMPT, "rain on a tin roof", "a dog barking"] * 50, f"{directory}/tokenizer/spiece.model",
                        vocab_size=200)
    return parts


def ours(directory: str, dtype: str, steps: int):
    """Our pipeline and a call that runs it once, recording its stage timings (conditioning, sampling, decode)."""
    import jax.numpy as jnp

    from stableaudio_jax.inference import pipeline as P
    pipe = P.TextToAudioPipeline.from_diffusers(directory, dtype=getattr(jnp, dtype))
    request = dict(steps=steps, cfg_scale=7.0, sampler="dpmpp-2m", seed=0)
    stages = []

    def run(**extra):
        timings = {}
        pipe.generate([PROMPT], timings=timings, **dict(request, **extra))
        stages.append(timings)

    return pipe, run, stages, request


def diffusers_reference(parts, pipe, steps: int, dtype: str):
    """diffusers' StableAudioPipeline with the same modules and deterministic DPM-Solver++(2M): a call that runs it
    once (T5 included, as ours) and blocks until done."""
    import torch
    from diffusers import EDMDPMSolverMultistepScheduler, StableAudioPipeline
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scheduler = EDMDPMSolverMultistepScheduler(sigma_min=0.3, sigma_max=500.0, sigma_data=1.0,
                                               sigma_schedule="exponential", prediction_type="v_prediction",
                                               algorithm_type="dpmsolver++", solver_order=2)
    scheduler.precondition_noise = lambda sigma: torch.as_tensor(sigma).atan() / math.pi * 2
    reference = StableAudioPipeline(tokenizer=None, scheduler=scheduler, **parts).to(device, getattr(torch, dtype))
    ids, mask = pipe.text.tokenize([PROMPT])
    ids_t, mask_t = torch.from_numpy(ids.astype(np.int64)).to(device), torch.from_numpy(mask.astype(np.int64))

    def run():
        with torch.no_grad():  # the text encoder runs inside the timed call, as ours
            hidden = parts["text_encoder"](ids_t, attention_mask=mask_t.to(device))[0]
            out = reference(prompt_embeds=hidden, attention_mask=mask_t.to(device), num_inference_steps=steps,
                            guidance_scale=7.0, output_type="pt").audios
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return run


def compare(parts, directory: str, args) -> dict:
    """Interleaved pairs of whole generations (ours, diffusers, ...); each pair keeps our stage timings."""
    pipe, run_ours, stages, request = ours(directory, args.dtype, args.steps)
    run_theirs = diffusers_reference(parts, pipe, args.steps, args.dtype)
    timing = interleaved_pairs(run_ours, run_theirs, args.pairs)
    for row, stage in zip(timing["pairs"], stages[-args.pairs:]):  # the warm-up's stages come first
        row["ours_stages"] = stage
    stage_median = {k: float(np.median([s[k] for s in stages[-args.pairs:]])) for k in stages[-1]}
    sde_s = median_seconds(lambda: pipe.generate([PROMPT], **dict(request, sampler="dpmpp-3m-sde")), args.pairs)
    return dict(timing, ours_stage_median_s=stage_median, ours_3m_sde_median_s=sde_s, window_s=pipe.window_seconds)


def main(argv=None) -> int:
    overrides, rest = split_override_args(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/dit.py:sao")
    parser.add_argument("--frames", type=int, default=1024, help="latent frames in the window (SAO: 1024)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--t5-layers", type=int, default=12)
    parser.add_argument("--pairs", "--repeats", dest="pairs", type=int, default=MIN_DOC_PAIRS,
                        help="timed interleaved pairs (ours, diffusers) (--repeats: the older name)")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--out")
    args = parser.parse_args(rest)
    config = resolve_conditioning(load_config(args.config, overrides))  # widths from conditioning.cond_dim
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        parts = build_modules(config.model, config.vae, args.frames, args.t5_layers, directory)
        build_s = time.perf_counter() - start
        generation = compare(parts, directory, args)
    report = {"benchmark": "generate", "config": args.config, "overrides": overrides, **environment(True),
              "frames": args.frames, "steps": args.steps, "dtype": args.dtype, "t5_layers": args.t5_layers,
              "build_s": build_s, "generate": generation}
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
