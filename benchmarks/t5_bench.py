"""T5 text-encoder benchmark: prompts/s of our Flax T5 against transformers' T5EncoderModel, same weights, same run.

  python benchmarks/t5_bench.py --config configs/t5.py:t5-base --batch 256 --out docs/results/t5_gpu.json

The model has random weights (t5-base sizes; nothing is downloaded), converted from the torch model with our
converter. Token ids are random with prompt lengths drawn from 8..48 tokens, padded to ``--max-length`` (128 for
SAO). Measures ``T5TextEncoder.encode`` (jitted; padded positions zeroed) vs ``T5EncoderModel`` under
``torch.no_grad``, timed as ``--pairs`` interleaved pairs (ours, torch, ...) after a warm-up pair; the figure
is the per-pair ratio torch seconds / our seconds (= our prompts/s over torch's), median and min-max. ``--skip-torch`` measures JAX alone; ``--dtype bfloat16`` runs our
encoder in bf16 (the torch reference stays float32 and is then only a speed reference, not a numerical one).
"""
from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
from common import MIN_DOC_PAIRS, environment, interleaved_pairs, median_seconds, write_report

from stableaudio_jax.config_loader import load_config
from stableaudio_jax.convert.t5 import t5_from_config, t5_params_from_state_dict
from stableaudio_jax.store.text_encoders import T5TextEncoder


def _hf_config(model_cfg):
    from transformers import T5Config
    return T5Config(vocab_size=model_cfg.vocab_size, d_model=model_cfg.d_model, d_kv=model_cfg.d_kv,
                    d_ff=model_cfg.d_ff, num_layers=model_cfg.num_layers, num_heads=model_cfg.num_heads,
                    relative_attention_num_buckets=model_cfg.num_buckets,
                    relative_attention_max_distance=model_cfg.max_distance, feed_forward_proj=model_cfg.feed_forward)


def _tokens(batch: int, max_length: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    lengths = rng.integers(8, 49, batch).clip(max=max_length)
    mask = np.arange(max_length)[None] < lengths[:, None]
    ids = np.where(mask, rng.integers(3, vocab, (batch, max_length)), 0).astype(np.int32)
    return ids, mask


def run(model_cfg, batch: int, max_length: int, pairs: int, dtype: str, skip_torch: bool) -> dict:
    module = t5_from_config(model_cfg, dtype=dtype)
    ids, mask = _tokens(batch, max_length, model_cfg.vocab_size)
    result = {"batch": batch, "max_length": max_length, "dtype": dtype}
    if skip_torch:
        params = jax.jit(module.init)(jax.random.key(0), jnp.asarray(ids[:1]), jnp.asarray(mask[:1]))
    else:
        import torch
        from transformers import T5EncoderModel
        torch.manual_seed(0)
        ref = T5EncoderModel(_hf_config(model_cfg)).eval()
        # on the device once, as the pipeline holds them (numpy arguments are copied in on every call)
        params = jax.device_put(t5_params_from_state_dict({k: v.numpy() for k, v in ref.state_dict().items()},
                                                          module))
    encoder = T5TextEncoder(module, params, max_length=max_length)
    ids_dev, mask_dev = jnp.asarray(ids), jnp.asarray(mask)
    ours = lambda: encoder.encode(ids_dev, mask_dev).block_until_ready()  # noqa: E731
    if skip_torch:
        seconds = median_seconds(ours, pairs)
        return dict(result, jax_seconds=seconds, jax_prompts_per_s=batch / seconds)
    ids_t, mask_t = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))
    with torch.no_grad():
        run_torch = lambda: ref(ids_t, attention_mask=mask_t).last_hidden_state * mask_t[..., None]  # noqa: E731
        timing = interleaved_pairs(ours, run_torch, pairs)
        expected = run_torch().numpy()
    summary = timing["summary"]
    result.update(timing, jax_prompts_per_s=batch / summary["ours_s"]["median"],
                  torch_prompts_per_s=batch / summary["reference_s"]["median"],
                  max_abs_diff=float(np.abs(np.asarray(encoder.encode(ids_dev, mask_dev)) - expected).max()))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/t5.py:t5-base")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--pairs", "--repeats", dest="pairs", type=int, default=MIN_DOC_PAIRS,
                        help="timed interleaved pairs (ours, torch) (--repeats: the older name)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    model_cfg = load_config(args.config).model
    report = {"benchmark": "t5", "config": args.config, **environment(not args.skip_torch),
              "encode": run(model_cfg, args.batch, args.max_length, args.pairs, args.dtype, args.skip_torch)}
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
