#!/usr/bin/env bash
# Times a whole evaluation at full size: ResNet-50 PSPNet, 200 inner steps, 1-shot, on the
# synthetic benchmark's 500 val images with random weights (the time does not depend on
# them). The first call on a WORKDIR makes the weights and the dataset in it; each call
# then times a fresh process evaluating into a new WORKDIR/eval.*, so its time includes
# start-up, compilation (unless `compilation_cache_dir` holds the programs already) and the
# feature cache. The defaults are the GPU setting (5 runs x 1000 episodes at 473 px); the
# CPU setting of docs/speed.md is
#
#   scripts/time_eval.sh WORKDIR --config.data.image_size=233 --config.eval.num_episodes=40 \
#       --config.eval.episodes_per_step=8
#
# Settings that change the model's shapes need a WORKDIR of their own. Prints the
# evaluation's table, then one JSON line: {"eval_wall_s": seconds, "results": path of its
# results.json}. Run from the repository root; $PYTHON (default: python) runs the Python.
set -euo pipefail

workdir=$1
shift
export PYTHONPATH="${PWD}${PYTHONPATH:+:${PYTHONPATH}}"  # the config files import configs.common
python=${PYTHON:-python}
config=configs/synthetic_fold0_1shot.py
settings=(
  --config.model.layers=50 --config.model.width=64 --config.model.bottleneck_dim=512
  --config.data.image_size=473 --config.data.synthetic_train=40
  --config.data.cache_dir="${workdir}/tfds" --config.inner.steps=200
  --config.eval.num_runs=5 --config.eval.num_episodes=1000 --config.eval.episodes_per_step=100
  "$@"
)
if [[ ! -d "${workdir}/weights" ]]; then
  rm -rf "${workdir}/weights.partial"  # left by an interrupted call
  "${python}" scripts/random_weights.py --config="${config}" --output_dir="${workdir}/weights.partial" \
    "${settings[@]}"
  "${python}" -m cwt_jax.main --config="${config}" --workdir="${workdir}/episodes" "${settings[@]}" \
    --config.mode=export_episodes >/dev/null  # builds the dataset
  mv "${workdir}/weights.partial" "${workdir}/weights"
fi
eval_dir=$(mktemp -d "${workdir}/eval.XXXXXX")
start=${EPOCHREALTIME}
"${python}" -m cwt_jax.main --config="${config}" --workdir="${eval_dir}" "${settings[@]}" \
  --config.mode=eval --config.init.backbone="${workdir}/weights/backbone" \
  --config.init.cwt="${workdir}/weights/cwt"
"${python}" -c 'import json, sys; print(json.dumps({"eval_wall_s": round(float(sys.argv[2]) - float(sys.argv[1]), 1), "results": sys.argv[3]}))' \
  "${start}" "${EPOCHREALTIME}" "${eval_dir}/results.json"
