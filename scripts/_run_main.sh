# Sourced by scripts/train.sh and scripts/test.sh: the `python -m cwt_jax.main` command
# both build from the original's positional arguments.
#
#   run_main MODE DATASET FOLD SHOT LAYERS GPUS [--config.key=value ...]
#
# The work dir is runs/{dataset}_fold{fold}_{shot}shot_resnet{layers}. CWT_DRY_RUN=1
# prints the command instead of running it.
run_main() {
  local mode=$1 dataset=$2 fold=$3 shot=$4 layers=$5 gpus=$6
  shift 6
  local command=(
    python -m cwt_jax.main
    "--config=configs/${dataset}_fold${fold}_${shot}shot.py"
    "--workdir=runs/${dataset}_fold${fold}_${shot}shot_resnet${layers}"
    "--config.model.layers=${layers}"
    "--config.mode=${mode}"
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
