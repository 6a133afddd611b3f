"""Stable Audio 3 generation on this CPU: ours (``SA3Pipeline``) against the reference's ``StableAudioModel.generate``
on the same random weights (the reference's modules built by its factory, their state dict converted to ours),
full size or tiny, timed as interleaved pairs after a warm-up (median and range of the time ratio).

  git clone https://github.com/Stability-AI/stable-audio-3 /tmp/sa3
  python benchmarks/sa3_generation_bench.py --reference /tmp/sa3 --variant small --seconds 30 120 --pairs 5 \
      --out docs/results/sa3_generation_cpu.json
  python benchmarks/sa3_generation_bench.py --reference /tmp/sa3 --variant tiny --pairs 2 --out /tmp/x.json  # a check

Both generate one clip with the published models' defaults (ping-pong, 8 steps, no guidance), float32 on CPU (the
reference turns half precision off without CUDA); ours on its length bucket, the reference on the exact length
(both lengths are in the JSON). The reference's T5Gemma conditioner runs its own forward on a
``transformers.T5GemmaEncoderModel`` (random, the published size for ``small``, saved for ours to load) and a
tokenizer trained here; only its own file loading is skipped. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment  # noqa: E402
from sa3_reference import import_reference, reference_commit  # noqa: E402

PROMPT = "warm analog synth pad with slow filter movement"


def sizes(variant: str) -> dict:
    if variant == "small":  # the published Small models (configs/sa3.py:small, configs/same.py:s)
        return dict(embed=1024, depth=20, heads=16, io=256, cond=768, memory=64, ff=4, same_channels=128,
                    same_depth=6, patch=256, stride=16, dim_heads=64, chunk=32, text_layers=12, text_width=768,
                    text_ff=2048, text_heads=12, vocab=256000, sample_rate=44100)
    return dict(embed=32, depth=2, heads=1, io=8, cond=768, memory=4, ff=2, same_channels=4, same_depth=2, patch=8,
                stride=4, dim_heads=8, chunk=8, text_layers=1, text_width=768, text_ff=64, text_heads=12,
                vocab=300, sample_rate=2000)


def model_config(s: dict) -> dict:
    same = dict(channels=s["same_channels"], c_mults=[6], strides=[s["stride"]], transformer_depths=[s["same_depth"]],
                latent_dim=s["io"], dim_heads=s["dim_heads"], variable_stride=True, chunk_size=s["chunk"],
                chunk_midpoint_shift=True)
    autoencoder = {"encoder": {"type": "same", "config": dict(same, in_channels=2 * s["patch"])},
                   "decoder": {"type": "same", "config": dict(same, out_channels=2 * s["patch"], conv_mapping=True,
                                                              mask_noise=0.01)},
                   "bottleneck": {"type": "softnorm", "config": {"dim": s["io"], "noise_regularize": True,
                                                                 "auto_scale": True}},
                   "pretransform": {"type": "patched", "config": {"channels": 2, "patch_size": s["patch"]}},
                   "latent_dim": s["io"], "downsampling_ratio": s["patch"] * s["stride"], "io_channels": 2}
    dit = dict(io_channels=s["io"], embed_dim=s["embed"], depth=s["depth"], num_heads=s["heads"],
               cond_token_dim=s["cond"], global_cond_dim=s["cond"], project_cond_tokens=True,
               global_cond_type="adaLN", timestep_features_type="expo", timestep_features_dim=256,
               num_memory_tokens=s["memory"], local_add_cond_dim=s["io"] + 1, norm_type="rms_norm",
               attn_kwargs={"qk_norm": "rms", "differential": False}, ff_kwargs={"mult": s["ff"]})
    return {"model_type": "diffusion_cond", "sample_rate": s["sample_rate"], "sample_size": 5292032,
            "audio_channels": 2,
            "model": {"io_channels": s["io"], "pretransform": {"type": "autoencoder", "chunked": False,
                                                               "config": autoencoder},
                      "conditioning": {"cond_dim": s["cond"], "configs": [
                          {"id": "prompt", "type": "t5gemma", "config": {"max_length": 256, "padding_mode": "learned"}},
                          {"id": "seconds_total", "type": "number",
                           "config": {"min_val": 0, "max_val": 384, "fourier_features_type": "expo"}}]},
                      "diffusion": {"type": "dit", "diffusion_objective": "rf_denoiser",
                                    "cross_attention_cond_ids": ["prompt", "seconds_total"],
                                    "global_cond_ids": ["seconds_total"],
                                    "local_add_cond_ids": ["inpaint_mask", "inpaint_masked_input"],
                                    "mask_padding_attention": True, "config": dit}}}


def tokenizer_directory(root: str, vocab: int) -> str:
    """A Gemma-style BPE tokenizer trained on a few captions (ids below any vocab size used here)."""
    from tokenizers import Tokenizer, models, normalizers, processors, trainers
    captions = [f"{a} {b} with slow filter movement at {n} BPM" for a in ("warm", "cold", "bright")
                for b in ("analog synth pad", "piano", "strings") for n in range(60, 180, 7)]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.train_from_iterator(captions, trainers.BpeTrainer(vocab_size=min(vocab, 300),
                                  special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"], show_progress=False))
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                             special_tokens=[("<bos>", 2), ("<eos>", 1)])
    directory = os.path.join(root, "t5gemma")
    os.makedirs(directory, exist_ok=True)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "GemmaTokenizer", "pad_token": "<pad>", "bos_token": "<bos>",
                   "eos_token": "<eos>", "unk_token": "<unk>", "padding_side": "right"}, f)
    return directory


def text_model(s: dict, directory: str):
    """A random T5GemmaEncoderModel of the given size, saved with the tokenizer (ours loads the same files)."""
    import torch
    import transformers
    encoder = dict(vocab_size=s["vocab"], hidden_size=s["text_width"], intermediate_size=s["text_ff"],
                   num_hidden_layers=s["text_layers"], num_attention_heads=s["text_heads"],
                   num_key_value_heads=s["text_heads"], head_dim=64, query_pre_attn_scalar=64)
    config = transformers.T5GemmaConfig(encoder=encoder, decoder=encoder, is_encoder_decoder=False)
    torch.manual_seed(0)
    model = transformers.T5GemmaEncoderModel(config).eval()
    model.save_pretrained(directory)
    return model


def reference_model(args, s: dict, config: dict, text_dir: str, hf_text):
    import torch
    import transformers
    factory, conditioners, model_module = import_reference(args.reference, "factory", "models.conditioners", "model")

    class InMemoryT5Gemma(conditioners.T5GemmaConditioner):  # the reference's forward; no file loading
        def __init__(self, output_dim, max_length=128, padding_mode="zero", **_):
            conditioners.Conditioner.__init__(self, 768, output_dim, project_out=False, padding_mode=padding_mode)
            self.max_length, self.enable_grad, self._device_initialized = max_length, False, False
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(text_dir)
            self.__dict__["model"] = hf_text

    factory.T5GemmaConditioner = InMemoryT5Gemma
    torch.manual_seed(1)
    model = factory.create_diffusion_cond_from_config(config).eval()
    return model_module.StableAudioModel(model, config, "cpu", False), model


def our_pipeline(s: dict, config: dict, reference_module, text_dir: str, exact: bool):
    from stableaudio_jax.convert.stable_audio_3 import load_sa3_checkpoint
    from stableaudio_jax.inference.sa3_pipeline import SA3Pipeline
    from safetensors.torch import save_file
    directory = os.path.dirname(text_dir)
    save_file({k: v.contiguous() for k, v in reference_module.state_dict().items()},
              os.path.join(directory, "model.safetensors"))
    with open(os.path.join(directory, "model_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    from stableaudio_jax.inference.sa3 import LENGTH_BUCKETS
    return SA3Pipeline(load_sa3_checkpoint(directory, text_dir), buckets=None if exact else LENGTH_BUCKETS)


def sa3_frames(pipe, seconds: float) -> int:
    """The reference's latent length for one clip (no buckets)."""
    from stableaudio_jax.inference import sa3
    g = pipe.generation
    return sa3.latent_lengths([seconds], sample_rate=pipe.sample_rate, downsampling_ratio=pipe.vae.downsampling_ratio,
                              padding_seconds=float(g.duration_padding_seconds), max_frames=int(g.max_frames),
                              buckets=None).frames


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="a checkout of Stability-AI/stable-audio-3")
    parser.add_argument("--variant", choices=("small", "tiny"), default="small")
    parser.add_argument("--seconds", type=float, nargs="+", default=[30.0, 120.0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--out", default="docs/results/sa3_generation_cpu.json")
    parser.add_argument("--workdir", default="/tmp/sa3_bench")
    parser.add_argument("--exact-length", action="store_true",
                        help="ours on the reference's exact latent length instead of its length bucket")
    parser.add_argument("--reference-commit", help="the checkout's commit, when it is not a git work tree")
    args = parser.parse_args(argv)
    import jax
    import torch
    env = environment(with_torch=True)  # host, its load at start, versions, threads, the code's commit
    s = sizes(args.variant)
    config = model_config(s)
    text_dir = tokenizer_directory(args.workdir, s["vocab"])
    hf_text = text_model(s, text_dir)
    reference, module = reference_model(args, s, config, text_dir, hf_text)
    ours = our_pipeline(s, config, module, text_dir, args.exact_length)
    rows = []
    for seconds in args.seconds:
        run_ours = lambda: jax.block_until_ready(ours([PROMPT], [seconds], seed=0))  # noqa: E731
        run_reference = lambda: reference.generate(PROMPT, duration=seconds, steps=8, seed=0)  # noqa: E731
        warm = {"ours_first_call_s": timed(run_ours), "reference_first_call_s": timed(run_reference)}
        pairs = []
        for _ in tqdm.trange(args.pairs, desc=f"{seconds:g} s pairs"):
            pairs.append((timed(run_ours), timed(run_reference)))
        ratios = [r / o for o, r in pairs]  # > 1: ours is faster
        frames = {"ours_frames": ours.lengths([seconds]).frames,  # ours: a length bucket unless --exact-length
                  "reference_frames": sa3_frames(ours, seconds)}
        rows.append({"seconds": seconds, **frames, **warm, "pairs_s": pairs, "speedup_median": statistics.median(ratios),
                     "speedup_min": min(ratios), "speedup_max": max(ratios)})
        print(f"{seconds:6.1f} s: ours {statistics.median(p[0] for p in pairs):.2f} s, reference "
              f"{statistics.median(p[1] for p in pairs):.2f} s, speed-up {statistics.median(ratios):.2f}x "
              f"[{min(ratios):.2f}, {max(ratios):.2f}]", flush=True)
    out = {"script": "benchmarks/sa3_generation_bench.py", "variant": args.variant, "prompt": PROMPT,
           "exact_length": args.exact_length,
           "sampler": "pingpong, 8 steps, no guidance, float32", "rows": rows,
           "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                       "jax": jax.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                       "xla_flags": os.environ.get("XLA_FLAGS", "")},
           "environment": env,
           "reference_commit": reference_commit(args.reference, args.reference_commit), "date": time.strftime("%Y-%m-%d")}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
