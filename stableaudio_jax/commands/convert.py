"""``stableaudio-jax convert``: a stable-audio-tools or diffusers checkpoint (+ its T5 or CLAP) → one of our model
checkpoints; or ``--from hf:OWNER/NAME[@REVISION]``: a Hugging Face Hub repo downloaded, converted once and kept in
the converted-model cache (``convert.pretrained``), copied to ``--out`` when given."""
from __future__ import annotations

import argparse
import shutil
import sys

LOCAL_SOURCES = ("stable-audio-tools", "diffusers", "stable-audio-3", "same")
LOCAL_ONLY = ("checkpoint", "model_config", "t5", "clap", "clap_tokenizer", "text_encoder")


def _source(value: str) -> str:
    if value in LOCAL_SOURCES or value.startswith("hf:"):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: expected stable-audio-tools, diffusers, stable-audio-3, same or "
                                     "hf:OWNER/NAME[@REVISION]")


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert a Stable Audio checkpoint into a stored text-to-audio model",
                       description="Write a stored text-to-audio model that `generate --checkpoint` loads.")
    p.add_argument("--from", dest="source", required=True, type=_source,
                   metavar="{stable-audio-tools,diffusers,stable-audio-3,same,hf:OWNER/NAME[@REVISION]}",
                   help="the local checkpoint's layout (stable-audio-3: a Stable Audio 3 model directory; same: a "
                        "SAME-S / SAME-L autoencoder directory), or a Hugging Face Hub repo to download and convert "
                        "once (e.g. hf:stabilityai/stable-audio-open-1.0, gated: accept its licence on the Hub first)")
    p.add_argument("--checkpoint",
                   help="stable-audio-tools model.safetensors / model.ckpt, a diffusers pipeline directory, or a "
                        "Stable Audio 3 / SAME directory (model_config.json + model.safetensors)")
    p.add_argument("--text-encoder", help="--from stable-audio-3: the T5Gemma directory (Hugging Face config.json, "
                                          "weights, tokenizer.json)")
    p.add_argument("--model-config", help="stable-audio-tools model_config.json")
    p.add_argument("--t5", help="Hugging Face T5 directory (config.json, weights, spiece.model); diffusers folders "
                                "default to their text_encoder/ and tokenizer/")
    p.add_argument("--clap", help="CLAP checkpoint for CLAP-conditioned models (Stable Audio 1.0 / 2.0): LAION "
                                  "CLAP .pt or a Hugging Face CLAP directory; not needed when the model checkpoint "
                                  "carries a fine-tuned CLAP")
    p.add_argument("--clap-tokenizer", help="roberta-base tokenizer directory (vocab.json + merges.txt) for CLAP")
    p.add_argument("--max-length", type=int, default=128, help="T5 tokens per prompt (diffusers only)")
    p.add_argument("--out", help="output directory (with --from hf: optional, a copy of the cached model)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--token", help="--from hf: a Hugging Face token for gated repos (default: $HF_TOKEN, else the "
                                   "saved `hf auth login`)")
    p.add_argument("--cache-dir", help="--from hf: the converted models' cache (default: $STABLEAUDIO_JAX_CACHE/hub, "
                                       "else ~/.cache/stableaudio_jax/hub)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from stableaudio_jax import paths
    from stableaudio_jax.inference.pipeline import TextToAudioPipeline

    if args.source.startswith("hf:"):
        return _run_hub(args)
    for name in ("checkpoint", "out"):
        if not getattr(args, name):
            raise ValueError(f"--from {args.source} needs --{name}")
    # reference checkpoints in a bucket are read from a local mirror (the converters open local files)
    for name in ("checkpoint", "model_config", "t5", "clap", "clap_tokenizer", "text_encoder"):
        if getattr(args, name):
            setattr(args, name, paths.local(getattr(args, name)))
    if args.source in ("stable-audio-3", "same"):
        return _run_sa3(args)
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


def _run_sa3(args: argparse.Namespace) -> int:
    from stableaudio_jax.convert.stable_audio_3 import convert_same, convert_sa3
    if args.source == "same":
        print(f"wrote {convert_same(args.checkpoint, args.out, args.overwrite)}")
        return 0
    if not args.text_encoder:
        raise ValueError("--from stable-audio-3 needs --text-encoder: the T5Gemma directory (SA3 checkpoints do not "
                         "hold its weights)")
    print(f"wrote {convert_sa3(args.checkpoint, args.text_encoder, args.out, args.overwrite)}")
    return 0


def _run_hub(args: argparse.Namespace) -> int:
    """Download + convert (or find in the cache) the repo's model; the Hub's refusals are one error line."""
    from stableaudio_jax.convert.hub import HubError
    from stableaudio_jax.convert.pretrained import converted_model
    from stableaudio_jax.store.format import staged_directory

    local = [f"--{name.replace('_', '-')}" for name in LOCAL_ONLY if getattr(args, name)]
    if local:
        raise ValueError(f"--from {args.source} downloads the model and its text encoder; {', '.join(local)} "
                         "are for local checkpoints (--from stable-audio-tools / diffusers)")
    try:
        directory = converted_model(args.source, token=args.token, cache_dir=args.cache_dir,
                                    say=lambda line: print(line, file=sys.stderr))
    except HubError as e:
        print(f"stableaudio-jax convert: error: {e}", file=sys.stderr)
        return 2
    print(f"converted model: {directory}")
    if args.out:
        with staged_directory(args.out, args.overwrite) as staging:
            shutil.copytree(directory, staging, dirs_exist_ok=True)
        print(f"wrote {args.out}")
    return 0
