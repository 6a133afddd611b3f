"""Oobleck VAE benchmark: our JAX VAE against the PyTorch reference in the same run, and chunked decode memory.

  python benchmarks/vae_bench.py --config configs/vae.py:sao --seconds 1 --out docs/results/vae_cpu.json

1. Speed: encode and decode of ``--seconds`` of audio, JAX (jitted) vs diffusers' ``AutoencoderOobleck`` (the
   reference classes, same weights: the torch model's random weights converted with our converter), timed as
   ``--pairs`` interleaved pairs (ours, torch, ours, ...) after a warm-up pair. The figure is the per-pair ratio
   torch time / JAX time (median and min-max); absolute times depend on the machine. Needs the test extra (torch, diffusers); ``--skip-torch`` measures JAX alone.
2. Memory: XLA's compiled memory analysis (no execution) of a whole-signal decode and of the chunked decode for
   ``--long-seconds`` of audio: the bytes of temporaries each needs on the device.
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from common import MIN_DOC_PAIRS, environment, interleaved_pairs, median_seconds, write_report

from stableaudio_jax.config_loader import load_config
from stableaudio_jax.convert.vae import vae_params_from_state_dict
from stableaudio_jax.models.autoencoder import OobleckVAE, count_params, vae_from_config
from stableaudio_jax.models.chunked_vae import chunked_decode


def _torch_reference(model_cfg):
    import torch
    from diffusers import AutoencoderOobleck

    torch.manual_seed(0)
    model = AutoencoderOobleck(encoder_hidden_size=model_cfg.channels, downsampling_ratios=list(model_cfg.strides),
                               channel_multiples=list(model_cfg.c_mults), decoder_channels=model_cfg.channels,
                               decoder_input_channels=model_cfg.latent_dim,
                               audio_channels=model_cfg.audio_channels).eval()
    return torch, model


def speed(model_cfg, seconds: float, batch: int, pairs: int, skip_torch: bool) -> dict:
    vae = vae_from_config(model_cfg)
    ratio = vae.downsampling_ratio
    frames = max(1, round(seconds * model_cfg.sample_rate / ratio))
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((batch, frames * ratio, model_cfg.audio_channels)).astype(np.float32) * 0.1
    latents = rng.standard_normal((batch, frames, model_cfg.latent_dim)).astype(np.float32)
    if skip_torch:
        params = jax.jit(lambda k, a: vae.init(k, a, sample=False))(jax.random.key(0), jnp.asarray(audio[:1]))
    else:
        torch, ref = _torch_reference(model_cfg)
        state = {k: v.numpy() for k, v in ref.state_dict().items()}
        # on the device once, as the pipeline holds them (numpy arguments are copied in on every call)
        params = jax.device_put(vae_params_from_state_dict(state, vae, "diffusers", "diffusers AutoencoderOobleck"))
    encode = jax.jit(lambda p, a: vae.apply(p, a, method=OobleckVAE.encode))
    decode = jax.jit(lambda p, z: vae.apply(p, z, method=OobleckVAE.decode))
    a_dev, z_dev = jnp.asarray(audio), jnp.asarray(latents)
    ours_encode = lambda: encode(params, a_dev).block_until_ready()  # noqa: E731
    ours_decode = lambda: decode(params, z_dev).block_until_ready()  # noqa: E731
    result = {"audio_seconds": frames * ratio / model_cfg.sample_rate, "batch": batch, "latent_frames": frames,
              "parameters": count_params(params)}
    if skip_torch:
        return dict(result, jax_encode_s=median_seconds(ours_encode, pairs),
                    jax_decode_s=median_seconds(ours_decode, pairs))
    a_t = torch.from_numpy(np.ascontiguousarray(audio.transpose(0, 2, 1)))
    z_t = torch.from_numpy(np.ascontiguousarray(latents.transpose(0, 2, 1)))
    with torch.no_grad():
        result["encode"] = interleaved_pairs(ours_encode, lambda: ref.encode(a_t).latent_dist.mean, pairs)
        result["decode"] = interleaved_pairs(ours_decode, lambda: ref.decode(z_t).sample, pairs)
        ref_decoded = ref.decode(z_t).sample.numpy().transpose(0, 2, 1)
        ref_mean = ref.encode(a_t).latent_dist.mean.numpy().transpose(0, 2, 1)
    result["max_abs_diff_decode"] = float(np.abs(np.asarray(decode(params, z_dev)) - ref_decoded).max())
    result["max_abs_diff_encode_mean"] = float(np.abs(np.asarray(encode(params, a_dev)) - ref_mean).max())
    return result


def decode_memory(model_cfg, seconds: float, chunk_size: int, overlap: int) -> dict:
    """Compiled (not executed) memory of a whole-signal vs chunked decode of ``seconds`` of audio, batch 1."""
    vae = vae_from_config(model_cfg)
    frames = round(seconds * model_cfg.sample_rate / vae.downsampling_ratio)
    audio = jax.ShapeDtypeStruct((1, vae.downsampling_ratio, model_cfg.audio_channels), jnp.float32)
    params = jax.eval_shape(lambda a: vae.init(jax.random.key(0), a, sample=False), audio)
    latents = jax.ShapeDtypeStruct((1, frames, model_cfg.latent_dim), jnp.float32)
    out = {"audio_seconds": frames * vae.downsampling_ratio / model_cfg.sample_rate, "latent_frames": frames,
           "chunk_size": chunk_size, "overlap": overlap}
    for name, fn in (("whole", lambda p, z: vae.apply(p, z, method=OobleckVAE.decode)),
                     ("chunked", lambda p, z: chunked_decode(vae, p, z, chunk_size=chunk_size, overlap=overlap))):
        start = time.perf_counter()
        stats = jax.jit(fn).lower(params, latents).compile().memory_analysis()
        out[f"{name}_temp_bytes"] = int(stats.temp_size_in_bytes)
        out[f"{name}_output_bytes"] = int(stats.output_size_in_bytes)
        out[f"{name}_compile_s"] = time.perf_counter() - start
    out["whole_over_chunked_temp"] = out["whole_temp_bytes"] / out["chunked_temp_bytes"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/vae.py:sao")
    parser.add_argument("--seconds", type=float, default=1.0, help="audio length for the speed comparison")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pairs", "--repeats", dest="pairs", type=int, default=MIN_DOC_PAIRS,
                        help="timed interleaved pairs (ours, torch) per figure (--repeats: the older name)")
    parser.add_argument("--long-seconds", type=float, default=285.0, help="audio length for the memory analysis")
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--skip-torch", action="store_true", help="measure JAX alone (no reference installed)")
    parser.add_argument("--out", help="write the JSON here (also printed)")
    args = parser.parse_args(argv)

    model_cfg = load_config(args.config).model
    report = {"benchmark": "vae", "config": args.config, "dtype": "float32", **environment(not args.skip_torch),
              "speed": speed(model_cfg, args.seconds, args.batch, args.pairs, args.skip_torch),
              "decode_memory": decode_memory(model_cfg, args.long_seconds, args.chunk_size, args.overlap)}
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
