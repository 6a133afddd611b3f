"""``stableaudio-jax convert``: a stable-audio-tools or diffusers checkpoint (+ its T5 or CLAP) → one of our model
checkpoints."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert a Stable Audio checkpoint into a stored text-to-audio model",
                       description="Write a stored text-to-audio model that `generate --checkpoint` loads.")
    p.add_argument("--from", dest="source", required=True, choices=["stable-audio-tools", "diffusers"])
    p.add_argument("--checkpoint", required=True,
                   help="stable-audio-tools model.safetensors / model.ckpt, or a diffusers pipeline directory")
    p.add_argument("--model-config", help="stable-audio-tools model_config.json")
    p.add_argument("--t5", help="Hugging Face T5 directory (config.json, weights, spiece.model); diffusers folders "
                                "default to their text_encoder/ and tokenizer/")
    p.add_argument("--clap", help="CLAP checkpoint for CLAP-conditioned models (Stable Audio 1.0 / 2.0): LAION "
                                  "CLAP .pt or a Hugging Face CLAP directory; not needed when the model checkpoint "
                                  "carries a fine-tuned CLAP")
    p.add_argument("--clap-tokenizer", help="roberta-base tokenizer directory (vocab.json + merges.txt) for CLAP")
    p.add_argument("--max-length", type=int, default=128, help="T5 tokens per prompt (diffusers only)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from stableaudio_jax import paths
    from stableaudio_jax.inference.pipeline import TextToAudioPipeline

    # reference checkpoints in a bucket are read from a local mirror (the converters open local files)
    for name in ("checkpoint", "model_config", "t5", "clap", "clap_tokenizer"):
        if getattr(args, name):
            setattr(args, name, paths.local(getattr(args, name)))
    if args.source == "stable-audio-tools":
        if not args.model_config:
            raise ValueError("--from stable-audio-tools needs --model-config")
        if args.clap_tokenizer:  # a CLAP-conditioned model (its text encoder from --clap or the checkpoint)
            pipe = TextToAudioPipeline.from_pretrained_stable_audio(args.checkpoint, args.model_config, args.clap,
                                                                    clap_tokenizer=args.clap_tokenizer)
        elif not args.t5:
            raise ValueError("--from stable-audio-tools needs --t5 (T5-conditioned models such as SAO) or "
                             "--clap-tokenizer [--clap] (CLAP-conditioned Stable Audio 1.0 / 2.0)")
        else:
            pipe = TextToAudioPipeline.from_pretrained_stable_audio(args.checkpoint, args.model_config, args.t5)
    else:
        pipe = TextToAudioPipeline.from_diffusers(args.checkpoint, t5_directory=args.t5, max_length=args.max_length)
    out = pipe.save(args.out, overwrite=args.overwrite)
    print(f"wrote {out} (window {pipe.window_seconds:.2f} s at {pipe.sample_rate} Hz)")
    return 0
