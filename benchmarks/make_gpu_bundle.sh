#!/usr/bin/env bash
# Build the Python packages a bare GPU machine lacks into ONE compressed file that the device tool can carry
# (64 MiB for the working tree and everything carried): benchmarks/wheels/site-packages-py<MAJOR><MINOR>.tar.xz.
#
#   bash benchmarks/make_gpu_bundle.sh                 # for the GPU machine's Python 3.12 (run where the registry is)
#   bash benchmarks/make_gpu_bundle.sh --python 3.11   # for a local dry run of gpu_check.sh in a bare venv
#
# Then: device run with carry=["benchmarks/wheels/site-packages-py312.tar.xz"] (that file only, 53 MiB; the working tree
# adds ~2 MiB of the 64), command `bash benchmarks/gpu_check.sh`. gpu_check.sh unpacks
# the bundle and puts it first on PYTHONPATH when the machine's transformers is older than ours or `datasets` /
# `accelerate` are missing. The machine's torch (and numpy) are used as they are: the bundle holds none of them.
#
# Why a tarball and not the wheels: the wheels of datasets' dependencies alone are ~70 MB (pyarrow 55 MB); xz over
# the installed files is about half of that. The versions are the ones installed where this runs (the tested set).
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=3.12
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PYVER="$2"; shift 2 ;;
    --python=*) PYVER="${1#--python=}"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-$(command -v python || command -v python3)}
# What run_vgd.py, the benchmarks and the Trainer import beyond torch, with every dependency they declare (walked
# through the installed packages' metadata, markers evaluated for the target Python), at the versions installed here.
# Left out: torch and what comes with it on the GPU machine (numpy: its build must match torch's).
mapfile -t PINNED < <($PY - "$PYVER" <<'EOF'
import importlib.metadata as metadata
import re
import sys

from packaging.requirements import Requirement

ROOTS = ["transformers", "huggingface_hub", "tokenizers", "safetensors", "accelerate", "datasets"]
MACHINE = re.compile(r"^(torch|triton|numpy|nvidia-.*|setuptools|pip)$")
environment = {"python_version": sys.argv[1], "python_full_version": sys.argv[1] + ".0", "extra": ""}
seen, todo = {}, list(ROOTS)
while todo:
    name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
    if name in seen or MACHINE.match(name):
        continue
    seen[name] = metadata.version(name)
    for line in metadata.requires(name) or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            todo.append(requirement.name)
for name in sorted(seen):
    print(f"{name}=={seen[name]}")
EOF
)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
TAG=${PYVER/./}
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$WORK/wheels" "${PINNED[@]}"
$PY -m pip install -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --target "$WORK/site" "$WORK"/wheels/*.whl
find "$WORK/site" -name __pycache__ -type d -prune -exec rm -rf {} +
rm -rf "$WORK/site/bin"  # console scripts written for this machine's interpreter
# what nothing here imports: the libraries' own test suites, C headers and Cython sources (~25 MB unpacked)
rm -rf "$WORK"/site/pandas/tests "$WORK"/site/pyarrow/tests "$WORK"/site/pyarrow/include "$WORK"/site/pyarrow/src
find "$WORK/site" \( -name "*.pyx" -o -name "*.pxd" -o -name "*.pxi" -o -name "*.h" \) -delete
mkdir -p benchmarks/wheels
OUTFILE=benchmarks/wheels/site-packages-py$TAG.tar.xz
tar -C "$WORK/site" -cf - . | xz -9 -T0 >"$OUTFILE.tmp"
mv "$OUTFILE.tmp" "$OUTFILE"
printf '%s\n' "${PINNED[@]}" >"benchmarks/wheels/site-packages-py$TAG.txt"
echo "$OUTFILE: $(du -h "$OUTFILE" | cut -f1) (${#PINNED[@]} packages, unpacked $(du -sh "$WORK/site" | cut -f1))"
