#!/usr/bin/env bash
# Wheels for running cwt-jax on an offline GPU machine whose Python 3.12 already has JAX
# with CUDA, NumPy, OpenCV, absl, tqdm and protobuf (the H200 image that
# scripts/gpu_report.py was written for): cwt-jax itself, built from this checkout, the
# data, config and logging packages it needs, and flax, optax and orbax-checkpoint. Each
# is pinned to the version installed here, so the GPU runs the code the tests ran. Run
# from the repository root, where pip reaches a package index:
#
#   scripts/gpu_wheels.sh DIR
#
# then on the GPU machine, with DIR copied there:
#
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site DIR/*.whl
#   export PYTHONPATH=/tmp/site
set -euo pipefail

dir=$1
binary=(
  flax optax orbax-checkpoint ml-collections tensorboardX grain array-record
  tensorflow-datasets tensorflow-metadata googleapis-common-protos dm-tree immutabledict
  simple-parsing docstring-parser portpicker termcolor toml
)
source_only=(promise)  # no wheel on the index: built here (pure Python)
pinned() {
  python -c 'import sys, importlib.metadata as m; print(*(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "$@"
}
mkdir -p "${dir}"
# shellcheck disable=SC2046  # one argument per pinned package
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "${dir}" $(pinned "${binary[@]}")
# shellcheck disable=SC2046
python -m pip wheel -q --no-deps -w "${dir}" $(pinned "${source_only[@]}")
# cwt-jax from a copy of the working tree, so that the build leaves nothing in it.
source_copy=$(mktemp -d)
trap 'rm -rf "${source_copy}"' EXIT
cp -r cwt_jax pyproject.toml README.md "${source_copy}"
python -m pip wheel -q --no-deps -w "${dir}" "${source_copy}"
du -sh "${dir}"
