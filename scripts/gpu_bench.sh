#!/usr/bin/env bash
# The GPU benchmark of the paper's setting: ResNet-50, 473 px, the inner loop at 200 steps,
# 1-shot and 5-shot, 32 episodes per step and then one (meta-training: 8 and 1). Each case
# is one process printing one JSON object; most of its time is compilation (the cases
# share the pre-training step's through JAX's persistent compilation cache).
# Run from the repository root:
#
#   scripts/gpu_bench.sh [--config.key=value ...]
set -euo pipefail
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/cwt_jax_compilation_cache}"

for batch in 32 1; do
  for shot in 1 5; do
    python -m cwt_jax.benchmark --config="configs/pascal_fold0_${shot}shot.py" --repeats=3 \
      --config.eval.episodes_per_step="${batch}" \
      --config.metatrain.episodes_per_step="$(((batch + 3) / 4))" \
      "$@"
  done
done
