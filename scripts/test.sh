#!/usr/bin/env bash
# Evaluates a trained CWT on the novel classes of a fold, with the arguments of
# CWT-for-FSS's scripts/test.sh, from any directory:
#
#   scripts/test.sh {dataset} {shot} {gpus} {layers} {fold} [--config.key=value ...]
#   e.g. scripts/test.sh pascal 1 0 50 0
#
# dataset: pascal | coco | synthetic; shot: 1 | 5; gpus: CUDA_VISIBLE_DEVICES, e.g. 0 or 0,1;
# layers: 50 | 101 | four block counts (1,1,1,1); fold: 0-3. Further arguments go to
# `python -m cwt_jax.main`, e.g. --config.init.backbone=pspnet.pth --config.init.cwt=cwt.pth
# to evaluate released weights; without them the run reads the checkpoints
# scripts/train.sh wrote to runs/{dataset}_fold{fold}_{shot}shot_resnet{layers} in the
# current directory, and writes results.json there. --help prints the usage;
# CWT_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
source "$(dirname "$0")/_run_main.sh"

if [[ ${1:-} == --help || ${1:-} == -h ]]; then
  usage test.sh "{shot} {gpus} {layers} {fold}"
  exit 0
fi
check_arguments test.sh "{shot} {gpus} {layers} {fold}" $# "${1:-}" "${4:-}"
dataset=$1 shot=$2 gpus=$3 layers=$4 fold=$5
shift 5
run_main eval "${dataset}" "${fold}" "${shot}" "${layers}" "${gpus}" "$@"
