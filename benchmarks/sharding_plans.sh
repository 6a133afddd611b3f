#!/usr/bin/env bash
# The ahead-of-time plans behind docs/sharding.md: Stable Audio Open's DiT (and a 3 B DiT) searched on TPU slices
# and GPU nodes this machine does not have (`pip install -e ".[aot]"`). Each line appends one JSON object (the
# fastest fitting strategy and every candidate screened) to docs/results/sharding/<name>.jsonl; render the tables
# with `python benchmarks/sharding_report.py`. The checkout's own code runs (python -m from the repository root),
# not whatever `stableaudio-jax` is installed. Over 6 hours on 2 CPU cores (the generation plans compile SAO's VAE decoder, ~8 min per mesh; the 3 B, v6e-256 and batch-256 searches take an hour or more each). Usage: benchmarks/sharding_plans.sh [name...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/results/sharding
mkdir -p "$out"
export JAX_PLATFORMS=cpu

sao="--config configs/dit.py:sao"
big="--config configs/dit.py:sao --config.model.embed_dim=2304 --config.model.num_heads=36 --config.model.depth=32"
# Generation plans serve bfloat16 weights: with float32 ones, the cost fitted from small unrolled sampler twins
# depends on whether XLA shares one weight cast between the twin's two steps, and the curve zigzags.
# The fine-tune memory plans run at batch 1 and at the batch docs/fine_tuning.md recommends (8), each row the real
# scanned compile only (--no-unroll-cost: memory is what they answer; sao_finetune_l4x1 has the bounds).
lean="$sao --target gpu:l4x1 --mesh 1x1x1 --batch 1,8 --remat none,full --opt-dtype float32,bfloat16 --no-unroll-cost"
declare -A plans=(
  [sao_v5e-8]="$sao --target tpu:v5e-8 --find"
  [sao_v5p-8]="$sao --target tpu:v5p-8 --find"
  [sao_v5p-64]="$sao --target tpu:v5p-64 --find"
  [sao_v6e-64]="$sao --target tpu:v6e-64 --find"
  [sao_v6e-256]="$sao --target tpu:v6e-256 --find"
  [sao_v6e-256_fsdp]="$sao --target tpu:v6e-256 --mesh 1x256x1,2x128x1,4x64x1,8x32x1"
  [sao_h100x8]="$sao --target gpu:h100x8 --find"
  [sao_finetune_l4x1]="$sao --target gpu:l4x1 --find --remat none,full --opt-dtype float32,bfloat16 --param-dtype float32,bfloat16"
  # the same step with and without full remat, each costed from its 1- and 2-layer twins: remat's recomputation
  # is in XLA's cost analysis of the compiled GPU module, so the bounds differ (bfloat16 parameters: both compile)
  [sao_remat_l4x1]="$sao --target gpu:l4x1 --mesh 1x1x1 --remat none,full --param-dtype bfloat16"
  [sao_finetune_l4x8]="$sao --target gpu:l4x8 --find --remat none,dots,full"
  # full fine-tune on one 24 GB card, each EMA placement compiled in full (no estimates); then LoRA rank 16 / 64
  [sao_finetune_ema_device_l4x1]="$lean"
  [sao_finetune_ema_host_l4x1]="$lean --config.training.ema.place=host"
  [sao_finetune_ema_off_l4x1]="$lean --config.training.ema.place=off"
  [sao_lora16_l4x1]="$sao --target gpu:l4x1 --mesh 1x1x1 --batch 1,8 --remat none,full --no-unroll-cost --config.training.lora.rank=16"
  [sao_lora64_l4x1]="$sao --target gpu:l4x1 --mesh 1x1x1 --batch 1,8 --remat none,full --no-unroll-cost --config.training.lora.rank=64"
  [sao_batch256_v5p]="$sao --target tpu:v5p --find --global-batch 256"
  [dit3b_v5p-64]="$big --target tpu:v5p-64 --find"
  [dit3b_v6e-64]="$big --target tpu:v6e-64 --find"
  [sao_v5p-64_batch]="$sao --target tpu:v5p-64 --find --batch 1,4"
  [sao_v6e-64_batch]="$sao --target tpu:v6e-64 --find --batch 1,4"
  [sao_generate_tp_v5p-8]="$sao --target tpu:v5p-8 --workload generate --param-dtype bfloat16 --mesh 1x1x4 --batch 1"
  [sao_generate_dp_v5p-8]="$sao --target tpu:v5p-8 --workload generate --param-dtype bfloat16 --mesh 4x1x1 --batch 16"
  [sao_attention_v5e-8]="$sao --target tpu:v5e-8 --mesh 1x8x1 --attention xla,flash --seconds 47.55,95"
  [sao_generate_length_v5p-8]="$sao --target tpu:v5p-8 --workload generate --param-dtype bfloat16 --mesh 4x1x1 --seconds 10,30,47.55,95,190,285"
  [vae_h100x8]="--config configs/vae.py:sao --workload vae-train --target gpu:h100x8 --mesh 8x1x1,4x2x1,1x8x1"
  # Stable Audio 3 Medium (1.45 B) training on its longest clips (4096 frames, 380 s): one chip's batch of 1 under
  # FSDP over a v5p-8's 4 chips, without and with full remat (one strategy each, not a search)
  [sa3_medium_v5p-8]="--config configs/sa3.py:medium --target tpu:v5p-8 --mesh 1x4x1 --batch 1 --remat none,full --no-measure"
  # the same step on the other slices: full remat only (without it the step needs > 159 GiB per chip on the v5p-8,
  # more than any of these chips has), FSDP over each slice's 8 chips / the node's 8 GPUs
  [sa3_medium_v5e-8]="--config configs/sa3.py:medium --target tpu:v5e-8 --mesh 1x8x1 --batch 1 --remat full --no-measure"
  [sa3_medium_v6e-8]="--config configs/sa3.py:medium --target tpu:v6e-8 --mesh 1x8x1 --batch 1 --remat full --no-measure"
  [sa3_medium_h100x8]="--config configs/sa3.py:medium --target gpu:h100x8 --mesh 1x8x1 --batch 1 --remat full --no-measure"
  # ... and generating that clip as the post-trained model does (ping-pong, 8 steps, unguided), bfloat16 weights:
  # the DiT's heads over the 4 chips, the SAME-L decoder in 192-frame chunks (128 + 2 x 32 overlap)
  [sa3_medium_generate_v5p-8]="--config configs/sa3.py:medium --target tpu:v5p-8 --workload generate --param-dtype bfloat16 --mesh 1x1x4 --batch 1 --steps 8 --config.training.crop_frames=4096 --config.generation.sampler=pingpong"
)
# XLA's GPU compiler without autotuning (ahead of time) fails to tile some GEMMs for the L4 (sm_89) at batch 8
# ("Couldn't find output tile sizes"): the L4 memory plans use cuBLAS GEMMs instead of Triton ones. Their memory
# plan is what they are for; XLA's cost analysis cannot count cuBLAS FLOPs, so they carry no cost.
l4_gemm="--xla_gpu_enable_triton_gemm=false"
declare -A xla_flags=([sao_finetune_ema_device_l4x1]=$l4_gemm [sao_finetune_ema_host_l4x1]=$l4_gemm
  [sao_finetune_ema_off_l4x1]=$l4_gemm [sao_lora16_l4x1]=$l4_gemm [sao_lora64_l4x1]=$l4_gemm)
order=(sao_v5p-8 sao_v5e-8 sao_v5p-64 sao_v6e-64 sao_h100x8 sao_finetune_l4x1 sao_remat_l4x1 sao_finetune_l4x8 sao_finetune_ema_device_l4x1
       sao_finetune_ema_host_l4x1 sao_finetune_ema_off_l4x1 sao_lora16_l4x1 sao_lora64_l4x1 dit3b_v5p-64
       dit3b_v6e-64 sao_attention_v5e-8 vae_h100x8 sao_generate_tp_v5p-8 sao_generate_dp_v5p-8 sao_generate_length_v5p-8 sao_v5p-64_batch sao_v6e-64_batch
       sao_v6e-256_fsdp sao_v6e-256 sao_batch256_v5p sa3_medium_v5p-8 sa3_medium_v5e-8 sa3_medium_v6e-8 sa3_medium_h100x8
       sa3_medium_generate_v5p-8)
for name in "${@:-${order[@]}}"; do
  echo "== $name: stableaudio-jax bench sharding ${plans[$name]}"
  rm -f "$out/$name.jsonl"
  # shellcheck disable=SC2086
  env ${xla_flags[$name]:+XLA_FLAGS=${xla_flags[$name]}} python -m stableaudio_jax.cli bench sharding ${plans[$name]} --no-progress --out "$out/$name.jsonl" \
    --markdown "$out/$name.md" || echo "(exit $?: nothing fits)"
done
