"""``stableaudio-jax encode``: pre-encode an ingested audio dataset into sharded TFRecord latents (resumable)."""
from __future__ import annotations

import argparse

from stableaudio_jax.commands import add_out_argument, setup_logging


def add_parser(sub) -> None:
    p = sub.add_parser("encode", help="pre-encode audio into sharded TFRecord latents + T5 text + timing",
                       description="Run the VAE encoder and T5 over an ingested dataset (`stableaudio-jax ingest`) "
                                   "in fixed windows and write sharded TFRecord files plus manifest.json. Hosts "
                                   "split the files; re-running the same command resumes an interrupted encode.")
    p.add_argument("--audio", required=True, help="an ingested audio dataset (the --out of `ingest`)")
    add_out_argument(p, "directory for the TFRecord shards and manifest.json", required=True)
    p.add_argument("--vae", required=True,
                   help="a stored VAE or text-to-audio model (export / convert), or a train-vae workdir (its "
                        "exported model/, else its latest checkpoint, named in the log)")
    p.add_argument("--text-encoder", required=True, action="append",
                   help="a Hugging Face T5 or CLAP directory or a stored text encoder / text-to-audio model; repeat "
                        "it (ID=PATH, e.g. t5=DIR clap=DIR) for several text conditioners whose features are "
                        "stored one after the other (a config's conditioning.text of type 'multi')")
    p.add_argument("--max-length", type=int, nargs="+", default=[128],
                   help="text tokens per caption (T5 for SAO: 128; CLAP for Stable Audio 1.0 / 2.0: 77); with several "
                        "--text-encoder, one value for all or one each")
    p.add_argument("--window-frames", type=int, default=1024,
                   help="latent frames per record (SAO: 1024 = 47.55 s); the last window of a file is padded")
    p.add_argument("--batch-size", type=int, default=8, help="windows per encoder call on this host")
    p.add_argument("--sample-posterior", action="store_true",
                   help="store a sample of the VAE posterior instead of its mean")
    p.add_argument("--text", choices=("embeddings", "ids"), default="embeddings",
                   help="store T5 embeddings (default) or token ids")
    p.add_argument("--latent-dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--text-dtype", choices=("float32", "bfloat16", "float16"), default="float16")
    p.add_argument("--shards-per-host", type=int, default=4)
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the VAE posterior samples (default 0: the same seed, the same latents)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs and CI)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    if overrides:
        raise ValueError(f"encode takes no --config overrides (got {overrides})")
    from stableaudio_jax.data.encode import encode_dataset
    from stableaudio_jax.parallel.distributed import initialize
    from stableaudio_jax.training.sources import resolve_text_encoder, resolve_vae

    setup_logging()
    initialize(None)
    vae = resolve_vae(args.vae)
    text = resolve_text_encoder(args.text_encoder, max_length=args.max_length)
    manifest = encode_dataset(args.audio, args.out, vae, text, window_frames=args.window_frames,
                              batch_size=args.batch_size, sample_posterior=args.sample_posterior,
                              text_form=args.text, latent_dtype=args.latent_dtype, text_dtype=args.text_dtype,
                              shards_per_host=args.shards_per_host, seed=args.seed, progress=not args.no_progress,
                              text_source=getattr(text, "locators", None) or text.source)
    if manifest:
        print(f"encoded {manifest['records']} records ({manifest['latent_frames']} x {manifest['latent_channels']} "
              f"latents, text {manifest['text']}) into {len(manifest['shards'])} shards in {args.out}")
    return 0
