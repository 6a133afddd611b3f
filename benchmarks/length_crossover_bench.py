"""Diffusion against autoregression over length, on this CPU: seconds to generate 10, 30, 60 and 120 s of audio with
MusicGen-small (``transformers``' MusicGen at its published sizes, random weights, its own ``generate``), Stable Audio
Open (ours, full size, random weights) and Stable Audio 3 Small (ours, full size, random weights), one plot, the
crossover stated.

  python benchmarks/length_crossover_bench.py --reference /tmp/sa3 --out docs/results/length_crossover_cpu.json \
      --plot docs/results/length_crossover_cpu.png
  python benchmarks/length_crossover_bench.py --variant tiny --systems musicgen sao --seconds 1 2 --out /tmp/x.json

Each system runs with its published defaults:
- MusicGen-small: T5-base text encoder, the 24-layer 1024-wide decoder over 4 EnCodec codebooks at 50 Hz (one
  decoder step per frame, plus 3 for the delay pattern), top-k 250 sampling, classifier-free guidance 3, the 32 kHz
  EnCodec decode. Timed end to end (text to waveform), ``generate`` as it ships.
- SA3 Small: ping-pong, 8 steps, no guidance; T5Gemma, the 20-layer DiT and SAME-S (the same random weights as
  ``benchmarks/sa3_generation_bench.py``: the reference's factory builds them, ours converts them; only ours runs),
  on its length bucket. Timed end to end after a warm-up call at the same length (compilation excluded).
- SAO: DPM-Solver++ (2M), 100 steps, CFG 7 (a doubled batch), the window set to the requested length. 100 steps
  of the 1.1 B DiT at 120 s would take hours here, so SAO runs ``--sao-steps`` steps (default 1) and its 100-step
  time is an **estimate**: conditioning + decode + 100 x the measured seconds per step (the scan repeats one step,
  so its time is linear in steps; the JSON keeps the measured stages).
One timed run per (system, length): a single run, not a median; the JSON keeps every run and the host's load.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np
import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, random_text_to_audio, write_report  # noqa: E402

PROMPT = "warm analog synth pad with slow filter movement"
SAO_STEPS = 100  # SAO's published default (dpmpp-3m-sde in its demo; DPM-Solver++ 2M costs the same per step here)
MUSICGEN_FRAME_RATE = 50  # EnCodec 32 kHz: 640 samples per frame


# ----------------------------------------------------------------------------------------------------- MusicGen


def musicgen_model(variant: str):
    """``MusicgenForConditionalGeneration`` with MusicGen-small's sizes (t5-base, EnCodec 32 kHz, the 24-layer
    decoder), random weights; ``tiny`` shrinks every part for tests."""
    import torch
    import transformers as T
    small = variant == "small"
    decoder = T.MusicgenDecoderConfig() if small else T.MusicgenDecoderConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, ffn_dim=64)
    codec = T.EncodecConfig(upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2], sampling_rate=32000,
                            codebook_size=2048, num_filters=64 if small else 4, hidden_size=128 if small else 16,
                            use_causal_conv=False, normalize=False, use_conv_shortcut=False)
    text = T.T5Config(d_model=768, d_ff=3072, num_layers=12, num_heads=12, d_kv=64) if small else T.T5Config(
        d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16)
    config = T.MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=codec.to_dict(), decoder=decoder.to_dict())
    torch.manual_seed(0)
    return T.MusicgenForConditionalGeneration(config).eval()


def musicgen_run(model, seconds: float) -> dict:
    """One text-to-waveform generation of ``seconds`` with MusicGen-small's defaults."""
    import torch
    ids = torch.randint(0, 32000, (1, 12), generator=torch.Generator().manual_seed(0))  # a 12-token prompt
    steps = math.ceil(seconds * MUSICGEN_FRAME_RATE) + model.decoder.num_codebooks - 1  # + the delay pattern
    start = time.perf_counter()
    with torch.no_grad():
        audio = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=250,
                               guidance_scale=3.0, max_new_tokens=steps, decoder_start_token_id=2048,
                               pad_token_id=2048, bos_token_id=2048)
    wall = time.perf_counter() - start
    rate = model.config.audio_encoder.sampling_rate
    return {"seconds_s": wall, "decoder_steps": steps, "audio_seconds": audio.shape[-1] / rate}


# ---------------------------------------------------------------------------------------------------- SA3 Small


def sa3_pipeline(reference: str, variant: str, workdir: str):
    """Ours, on the random weights ``sa3_generation_bench`` builds (the reference's factory, converted)."""
    import sa3_generation_bench as bench
    s = bench.sizes(variant)
    config = bench.model_config(s)
    text_dir = bench.tokenizer_directory(workdir, s["vocab"])
    hf_text = bench.text_model(s, text_dir)
    _, module = bench.reference_model(argparse.Namespace(reference=reference), s, config, text_dir, hf_text)
    return bench.our_pipeline(s, config, module, text_dir, exact=False)


def sa3_run(pipe, seconds: float) -> dict:
    import jax
    first = _timed(lambda: jax.block_until_ready(pipe([PROMPT], [seconds], seed=0)))  # compiles this length
    start = time.perf_counter()
    audio = jax.block_until_ready(pipe([PROMPT], [seconds], seed=0))
    wall = time.perf_counter() - start
    return {"seconds_s": wall, "first_call_s": first, "latent_frames": pipe.lengths([seconds]).frames,
            "audio_seconds": np.asarray(audio).shape[-2] / pipe.sample_rate}


# ---------------------------------------------------------------------------------------------------------- SAO


def sao_pipeline(variant: str, directory: str):
    """Ours at SAO's sizes (configs/dit.py:sao: the 24-layer DiT, the Oobleck VAE, t5-base), random weights."""
    import jax
    import jax.numpy as jnp

    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.inference.pipeline import TextToAudioPipeline
    from stableaudio_jax.models.t5 import T5Encoder
    from stableaudio_jax.store import T5TextEncoder
    from stableaudio_jax.store.tokenizers import T5Tokenizer, train_sentencepiece
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config(os.path.join(root, f"configs/dit.py:{'sao' if variant == 'small' else 'tiny'}"), [])
    t = config.conditioning.text
    spiece = train_sentencepiece([PROMPT, "rain on a tin roof", "a dog barking"] * 50,
                                 os.path.join(directory, "spiece.model"), vocab_size=200)
    encoder = T5Encoder(**t.model.to_dict())
    ids = jnp.zeros((1, int(t.max_length)), jnp.int32)
    text_params = jax.jit(lambda k: encoder.init(k, ids, jnp.ones(ids.shape, bool)))(jax.random.key(3))
    text_encoder = T5TextEncoder(encoder, text_params, T5Tokenizer(spiece, int(t.max_length)), int(t.max_length))
    return TextToAudioPipeline(random_text_to_audio(config, text_encoder, int(t.model.d_model), "SAO"))


def sao_run(pipe, seconds: float, steps: int) -> dict:
    pipe.set_window_seconds(seconds)
    request = dict(prompts=[PROMPT], seconds_total=seconds, steps=steps, cfg_scale=7.0, sampler="dpmpp-2m", seed=0)
    first = _timed(lambda: pipe.generate(**request))  # compiles this window
    stages: dict = {}
    start = time.perf_counter()
    audio = pipe.generate(**request, timings=stages)
    wall = time.perf_counter() - start
    per_step = stages["sampling_s"] / steps
    estimate = wall - stages["sampling_s"] + SAO_STEPS * per_step
    return {"seconds_s": estimate, "estimated": True, "measured_steps": steps, "measured_s": wall,
            "stages_s": stages, "sampling_s_per_step": per_step, "first_call_s": first,
            "latent_frames": pipe.latent_frames, "audio_seconds": audio.shape[1] / pipe.sample_rate}


# ------------------------------------------------------------------------------------------------------ results


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def crossovers(lengths: list[float], diffusion: list[float], autoregressive: list[float]) -> dict:
    """Where the diffusion model's time falls below the autoregressive one's: the verdict at every length, and
    each crossing between neighbouring lengths (linear interpolation of the time difference), if any."""
    faster = [d < a for d, a in zip(diffusion, autoregressive)]
    crossings = []
    for i in range(len(lengths) - 1):
        if faster[i] != faster[i + 1]:
            gap0 = diffusion[i] - autoregressive[i]
            gap1 = diffusion[i + 1] - autoregressive[i + 1]
            at = lengths[i] + (lengths[i + 1] - lengths[i]) * gap0 / (gap0 - gap1)
            crossings.append({"seconds": at, "diffusion_faster_above": faster[i + 1]})
    return {"diffusion_faster_at": [s for s, f in zip(lengths, faster) if f], "crossings": crossings}


def plot(rows: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = {"musicgen": "MusicGen-small (autoregressive, its generate)",
              "sa3": "SA3 Small (ours, ping-pong 8 steps)",
              "sao": f"SAO (ours, {SAO_STEPS} steps CFG 7; estimate from measured steps)"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in rows.items():
        seconds = [r["requested_seconds"] for r in runs]
        style = "o--" if any(r.get("estimated") for r in runs) else "o-"
        ax.plot(seconds, [r["seconds_s"] for r in runs], style, label=labels[name])
    ax.set_xlabel("audio generated (s)")
    ax.set_ylabel("seconds to generate, this CPU (log)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("time against length: one run per point, random weights, 2-core CPU", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", help="a checkout of Stability-AI/stable-audio-3 (builds SA3's weights)")
    parser.add_argument("--variant", choices=("small", "tiny"), default="small")
    parser.add_argument("--systems", nargs="+", choices=("musicgen", "sa3", "sao"),
                        default=["musicgen", "sa3", "sao"])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 30.0, 60.0, 120.0])
    parser.add_argument("--sao-steps", type=int, default=1, help="SAO steps actually run (the rest estimated)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--plot", help="a PNG of time against length")
    args = parser.parse_args(argv)
    if "sa3" in args.systems and not args.reference:
        parser.error("--systems sa3 needs --reference (a checkout of Stability-AI/stable-audio-3)")
    if args.sao_steps < 1 or args.sao_steps > SAO_STEPS:
        parser.error(f"--sao-steps={args.sao_steps}; expected 1 to {SAO_STEPS}")
    env = environment(with_torch=True)
    rows: dict = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.systems:  # one system at a time: three full-size models do not share 24 GiB well
            if name == "musicgen":
                model = musicgen_model(args.variant)
                musicgen_run(model, 1.0)  # warm-up: torch's first-call costs
                run = lambda s, m=model: musicgen_run(m, s)  # noqa: E731
            elif name == "sa3":
                pipe = sa3_pipeline(args.reference, args.variant, workdir)
                run = lambda s, p=pipe: sa3_run(p, s)  # noqa: E731
            else:
                pipe = sao_pipeline(args.variant, workdir)
                run = lambda s, p=pipe: sao_run(p, s, args.sao_steps)  # noqa: E731
            rows[name] = []
            for seconds in tqdm.tqdm(args.seconds, desc=name):
                rows[name].append(dict(run(seconds), requested_seconds=seconds,
                                       load_average=list(os.getloadavg())))
                print(name, rows[name][-1], flush=True)
            model = pipe = run = None
    verdicts = {name: crossovers(args.seconds, [r["seconds_s"] for r in rows[name]],
                                 [r["seconds_s"] for r in rows["musicgen"]])
                for name in rows if name != "musicgen" and "musicgen" in rows}
    report = {"benchmark": "length_crossover", "variant": args.variant, "prompt": PROMPT, "sao_steps": SAO_STEPS,
              "runs": rows, "against_musicgen": verdicts, **env}
    write_report(report, args.out)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
