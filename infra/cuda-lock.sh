#!/bin/sh
# Print requirements.lock with its CPU torch pin swapped for the CUDA build of the same version, for GPU
# nodes (infra/Dockerfile, infra/cluster-launcher.yaml). Every other pin is kept as locked.
#   usage: sh infra/cuda-lock.sh [LOCK] [CUDA_TAG]      (defaults: requirements.lock cu128)
#   e.g.   torch==2.13.0+cpu  ->  torch==2.13.0+cu128, installed with
#          pip install -r <output> --extra-index-url https://download.pytorch.org/whl/cu128
set -eu
lock=${1:-requirements.lock}
cuda=${2:-cu128}
if ! grep -Eq '^torch==[^+]+\+cpu$' "$lock"; then
  echo "cuda-lock.sh: $lock has no 'torch==X+cpu' line to swap; look at its torch pin" >&2
  exit 1
fi
sed -E "s/^torch==([^+]+)\+cpu$/torch==\1+${cuda}/" "$lock"
