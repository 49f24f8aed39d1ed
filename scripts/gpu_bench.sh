#!/usr/bin/env bash
# The GPU benchmark of the paper's setting: ResNet-50, 473 px, 1-shot and 5-shot, the
# inner loop at 200 steps, for several episode batch sizes. About 3 minutes on one H200
# (most of it compilation). Run from the repository root; prints one JSON object per case.
#
#   scripts/gpu_bench.sh [--config.key=value ...]
set -euo pipefail

for shot in 1 5; do
  for batch in 8 32; do
    python -m cwt_jax.benchmark --config="configs/pascal_fold0_${shot}shot.py" --repeats=3 \
      --config.eval.episodes_per_step="${batch}" \
      --config.metatrain.episodes_per_step="$((batch / 4))" \
      "$@"
  done
done
