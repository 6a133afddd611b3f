"""T5 text-encoder configs (the conditioner of Stable Audio Open is the original t5-base, frozen).

Variants:
  t5-base       12 layers, d_model 768, 12 heads, d_ff 3072, ReLU feed-forward (SAO's text encoder)
  t5-v1_1-base  12 layers, d_model 768, 12 heads, d_ff 2048, gated-GELU feed-forward
  tiny          2 layers, d_model 32, for tests
Converted checkpoints take their sizes from the checkpoint's config.json instead (convert.load_hf_t5).
"""
import ml_collections

BASE = dict(vocab_size=32128, d_model=768, d_kv=64, num_layers=12, num_heads=12, num_buckets=32, max_distance=128,
            layer_norm_eps=1e-6)
MODELS = {
    "t5-base": dict(BASE, d_ff=3072, feed_forward="relu"),
    "t5-v1_1-base": dict(BASE, d_ff=2048, feed_forward="gated-gelu"),
    "tiny": dict(vocab_size=512, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, num_buckets=32,
                 max_distance=128, layer_norm_eps=1e-6, feed_forward="relu"),
}


def get_config(arg=None):
    variant = arg or "t5-base"
    if variant not in MODELS:
        raise ValueError(f"configs/t5.py: unknown variant {variant!r}; expected one of {sorted(MODELS)}")
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.model = ml_collections.ConfigDict(MODELS[variant])
    config.max_length = 128  # tokens per prompt (SAO)
    config.dtype = "float32" if variant == "tiny" else "bfloat16"  # SAO runs T5 in fp16; bf16 is the TPU/GPU analogue
    return config
