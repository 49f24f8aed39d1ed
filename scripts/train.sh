#!/usr/bin/env bash
# Trains CWT (stage 1: PSPNet pre-training, stage 2: meta-training) and evaluates it,
# with the arguments of CWT-for-FSS's scripts/train.sh. Run from the repository root:
#
#   scripts/train.sh {dataset} {fold} {gpus} {layers} {shot} [--config.key=value ...]
#   e.g. scripts/train.sh pascal 0 0,1 50 1
#
# dataset: pascal | coco; fold: 0-3; gpus: CUDA_VISIBLE_DEVICES, e.g. 0 or 0,1;
# layers: 50 | 101; shot: 1 | 5. Further arguments go to `python -m cwt_jax.main`.
# The work dir is runs/{dataset}_fold{fold}_{shot}shot_resnet{layers}; rerunning the
# same command resumes there. CWT_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
source "$(dirname "$0")/_run_main.sh"

if [[ $# -lt 5 || ! $1 =~ ^(pascal|coco)$ || ! $4 =~ ^(50|101)$ ]]; then
  echo "usage: $0 {pascal|coco} {fold} {gpus} {50|101} {shot} [--config.key=value ...]" >&2
  exit 2
fi
dataset=$1 fold=$2 gpus=$3 layers=$4 shot=$5
shift 5
run_main all "${dataset}" "${fold}" "${shot}" "${layers}" "${gpus}" "$@"
