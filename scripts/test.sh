#!/usr/bin/env bash
# Evaluates a trained CWT on the novel classes of a fold, with the arguments of
# CWT-for-FSS's scripts/test.sh. Run from the repository root:
#
#   scripts/test.sh {dataset} {shot} {gpus} {layers} {fold} [--config.key=value ...]
#   e.g. scripts/test.sh pascal 1 0 50 0
#
# dataset: pascal | coco; shot: 1 | 5; gpus: CUDA_VISIBLE_DEVICES, e.g. 0 or 0,1;
# layers: 50 | 101; fold: 0-3. Further arguments go to `python -m cwt_jax.main`, e.g.
# --config.init.backbone=pspnet.pth --config.init.cwt=cwt.pth to evaluate released
# weights; without them the run reads the checkpoints scripts/train.sh wrote to
# runs/{dataset}_fold{fold}_{shot}shot_resnet{layers}, and writes results.json there.
# CWT_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
source "$(dirname "$0")/_run_main.sh"

if [[ $# -lt 5 || ! $1 =~ ^(pascal|coco)$ || ! $4 =~ ^(50|101)$ ]]; then
  echo "usage: $0 {pascal|coco} {shot} {gpus} {50|101} {fold} [--config.key=value ...]" >&2
  exit 2
fi
dataset=$1 shot=$2 gpus=$3 layers=$4 fold=$5
shift 5
run_main eval "${dataset}" "${fold}" "${shot}" "${layers}" "${gpus}" "$@"
