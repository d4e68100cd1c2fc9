#!/usr/bin/env bash
# Run the study's GPU checks from this source tree on the GPU machine (its own python3 and torch, never
# `pip install -e .` there): first tests/test_gpu_paths.py (every stage on cuda against the CPU) with the
# CUDA tests of the device ranking and TDOA estimators (tests/test_device_ranking.py, test_device_tdoa.py), then
# benchmarks/bench_study.py (each stage's seconds on cuda and on the CPU, and the whole study projected).
# Everything it prints goes to OUT/gpu_study.log as well; the benchmark's numbers to OUT/bench_study.json
# and the tests' report to OUT/test_gpu_paths.xml.
#
# That machine has Python 3.12 with torch, torchvision, numpy, scipy, xarray, numba, h5py, pillow, click,
# tqdm, safetensors, matplotlib, jinja2, markdown-it-py, pyyaml, packaging and pytest, but not zennit,
# captum, zarr (with numcodecs, donfig and google-crc32c), h5netcdf or soundfile (with cffi and pycparser).
# Those travel as wheels in .whl/ (ignored by git; carry it), installed into a temporary site for the run.
# pyroomacoustics, sofar and netCDF4 are not needed (the torch RIR backend, no HRTFs, results through
# h5netcdf). Fetch the wheels once (this covers scripts/gpu_zoo.sh too):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl zennit==0.5.1 captum==0.9.0 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 \
#       google-crc32c==1.9.0 h5netcdf==1.8.3 soundfile==0.14.0 cffi==2.0.0 pycparser==3.0
#
# Usage (arguments other than --out and --no-tests go to benchmarks/bench_study.py, which checks them with --check
# before the tests run: a bad one ends the run at once with its one line and exit status 2; see its docstring):
#   bash scripts/gpu_study.sh --out "$OUT" [--no-tests] [--sources 4 --t60 0.6 --snr 10 ...]
#   bash scripts/gpu_study.sh --help   (this text; the benchmark's options: python benchmarks/bench_study.py --help)
# On the GPU machine, carrying .whl, with a 540 s timeout (not yet measured there: the tests should take about
# two minutes and are stopped after TESTS_TIMEOUT_S, 240 s by default; the benchmark of 4 sources at T60 0.6 s
# a few, most of it the CPU baseline; everything printed is in OUT/gpu_study.log even if the command is cut):
#   bash scripts/gpu_study.sh --out "$OUT" --sources 4 --t60 0.6 --snr 10
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
for arg in "$@"; do  # before anything runs or is made
    case "$arg" in
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    esac
done
out=""
tests=1
bench_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out)
            if [ $# -lt 2 ] || [ -z "$2" ]; then
                echo "gpu_study.sh: error: argument --out: expected a folder" >&2
                exit 2
            fi
            out="$2"; shift 2 ;;
        --no-tests) tests=0; shift ;;
        *) bench_args+=("$1"); shift ;;
    esac
done
if [ -z "$out" ]; then
    echo "gpu_study.sh: --out FOLDER is required (on the GPU machine: --out \"\$OUT\")" >&2
    exit 2
fi
mkdir -p "$out"

run() {  # the whole run, its output also into OUT/gpu_study.log
    export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONUNBUFFERED=1
    needed="import zennit, captum, zarr, numcodecs, h5netcdf, soundfile"
    if ! "$python" -c "$needed" >/dev/null 2>&1; then
        shopt -s nullglob
        wheels=("$root"/.whl/*.whl)
        if [ ${#wheels[@]} -eq 0 ]; then
            echo "gpu_study.sh: zennit, captum, zarr, h5netcdf or soundfile is not importable and $root/.whl holds" \
                 "no wheels; fetch them (see this file)" >&2
            exit 2
        fi
        site="$(mktemp -d "${TMPDIR:-/tmp}/gpu-study-site.XXXXXX")"
        trap 'rm -rf "$site"' EXIT  # the installed wheels live only as long as this run
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "${wheels[@]}"
        export PYTHONPATH="$PYTHONPATH:$site"
    fi
    # preflight: every package the stages import, with its version (fails here, in seconds, not mid-run)
    "$python" - <<'EOF'
import importlib
from importlib.metadata import version

import torch

for name in ("torch", "torchvision", "numpy", "xarray", "zarr", "numcodecs", "h5netcdf", "zennit", "captum",
             "soundfile", "numba", "scipy"):
    importlib.import_module(name)
    print(f"gpu_study.sh: {name} {version(name)}")
print("gpu_study.sh: cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
    # the benchmark's arguments, checked (nothing run) before the tests spend minutes of the lease
    "$python" "$root/benchmarks/bench_study.py" --device cuda --threads "$(nproc)" --json "$out/bench_study.json" \
        "${bench_args[@]}" --check || return
    status=0
    if [ "$tests" = 1 ]; then
        # the cuda tests only (the benchmark runs next); a failed test does not stop it, the exit status says so.
        # They get at most TESTS_TIMEOUT_S (default 240 s), so the benchmark always keeps its share of the command.
        timeout "${TESTS_TIMEOUT_S:-240}" "$python" -m pytest -q -p no:cacheprovider -rs -k "not dry_run" --junitxml="$out/test_gpu_paths.xml" \
            "$root/tests/test_gpu_paths.py" "$root/tests/test_device_ranking.py" "$root/tests/test_device_tdoa.py" \
            || status=$?
    fi
    "$python" "$root/benchmarks/bench_study.py" --device cuda --threads "$(nproc)" --json "$out/bench_study.json" \
        "${bench_args[@]}" || status=$?
    return "$status"
}

run 2>&1 | tee -a "$out/gpu_study.log"
exit "${PIPESTATUS[0]}"
