#!/usr/bin/env bash
# Trains CWT (stage 1: PSPNet pre-training, stage 2: meta-training) and evaluates it,
# with the arguments of CWT-for-FSS's scripts/train.sh, from any directory:
#
#   scripts/train.sh {dataset} {fold} {gpus} {layers} {shot} [--config.key=value ...]
#   e.g. scripts/train.sh pascal 0 0,1 50 1
#
# dataset: pascal | coco | synthetic; fold: 0-3; gpus: CUDA_VISIBLE_DEVICES, e.g. 0 or 0,1;
# layers: 50 | 101 | four block counts (1,1,1,1); shot: 1 | 5. Further arguments go to
# `python -m cwt_jax.main`. The work dir is runs/{dataset}_fold{fold}_{shot}shot_resnet{layers}
# in the current directory; rerunning the same command resumes there. --help prints the
# usage; CWT_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
source "$(dirname "$0")/_run_main.sh"

if [[ ${1:-} == --help || ${1:-} == -h ]]; then
  usage train.sh "{fold} {gpus} {layers} {shot}"
  exit 0
fi
check_arguments train.sh "{fold} {gpus} {layers} {shot}" $# "${1:-}" "${4:-}"
dataset=$1 fold=$2 gpus=$3 layers=$4 shot=$5
shift 5
run_main all "${dataset}" "${fold}" "${shot}" "${layers}" "${gpus}" "$@"
