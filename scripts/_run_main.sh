# Sourced by scripts/train.sh and scripts/test.sh: the `python -m cwt_jax.main` command
# both build from the original's positional arguments.
#
#   run_main MODE DATASET FOLD SHOT LAYERS GPUS [--config.key=value ...]
#
# The config is configs/{dataset}_fold{fold}_{shot}shot.py of this repository (the
# synthetic benchmark: its fold-0 1-shot file with the fold and shot set); the work dir
# is runs/{dataset}_fold{fold}_{shot}shot_resnet{layers} under the current directory.
# LAYERS is 50, 101 or four block counts such as 1,1,1,1. CWT_DRY_RUN=1 prints the
# command instead of running it.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {  # usage SCRIPT ORDER: prints the usage line
  echo "usage: scripts/$1 {pascal|coco|synthetic} $2 [--config.key=value ...]"
  echo "  layers: 50, 101 or four block counts such as 1,1,1,1"
}

check_arguments() {  # check_arguments SCRIPT ORDER COUNT DATASET LAYERS: exits on bad ones
  if [[ $3 -lt 5 || ! $4 =~ ^(pascal|coco|synthetic)$ || ! $5 =~ ^([0-9]+|[0-9]+(,[0-9]+){3})$ ]]
  then
    usage "$1" "$2" >&2
    exit 2
  fi
}

run_main() {
  local mode=$1 dataset=$2 fold=$3 shot=$4 layers=$5 gpus=$6
  shift 6
  local config="${REPO}/configs/${dataset}_fold${fold}_${shot}shot.py" settings=()
  if [[ $dataset == synthetic ]]; then
    config="${REPO}/configs/synthetic_fold0_1shot.py"
    settings=("--config.data.fold=${fold}" "--config.data.shot=${shot}")
  fi
  local model_layers=$layers
  [[ $layers == *,* ]] && model_layers="(${layers})"
  local command=(
    python -m cwt_jax.main
    "--config=${config}"
    "--workdir=runs/${dataset}_fold${fold}_${shot}shot_resnet${layers//,/-}"
    "--config.model.layers=${model_layers}"
    "--config.mode=${mode}"
    "${settings[@]}"
    "$@"
  )
  if [[ -n "${CWT_DRY_RUN:-}" ]]; then
    local quoted
    quoted=$(printf '%q ' "${command[@]}")
    echo "CUDA_VISIBLE_DEVICES=${gpus} ${quoted% }"
    return 0
  fi
  CUDA_VISIBLE_DEVICES="${gpus}" exec "${command[@]}"
}
