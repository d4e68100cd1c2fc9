#!/usr/bin/env bash
# Dry-run both GPU launchers here, on the CPU, under the GPU machine's own Python and package versions.
#
# The GPU machine runs this source tree under its image's python3 (3.12) with torch 2.11.0, torchvision 0.26.0,
# numpy 2.5.2 and safetensors 0.8.0 (the device tool's KINDS.md), not under our pins (torch 2.14.1 here), and a
# failure there costs minutes of a 15-minute lease. This script builds a virtual environment with those
# versions, only the packages that image holds (the rest travel as wheels in .whl/, as on the machine), and runs
# the dry runs of scripts/gpu_zoo.sh and scripts/gpu_study.sh in it. It found that torch 2.11 refuses a
# BatchNorm eps of 0 (the LRP canonizers now use a positive eps that vanishes in 1 + eps).
#
# Usage: bash scripts/gpu_image_dry_run.sh [ENV_DIR] [OUT_DIR]   (-h, --help: this text)
#   ENV_DIR  the environment, made if absent or empty (default /tmp/gpu-image-env; about 5 GB: torch's CUDA wheels);
#            a folder this script made (ENV_DIR/.gpu-image-dry-run) is made again until its packages are all in,
#            any other folder is refused
#   OUT_DIR  the launchers' outputs (default: a new temporary folder)
# PYTHON312 names a Python 3.12 interpreter (default: python3.12 on PATH, else pyenv's 3.12).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for arg in "$@"; do
    case "$arg" in
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) echo "gpu_image_dry_run.sh: error: unknown option $arg; usage: bash scripts/gpu_image_dry_run.sh" \
                 "[ENV_DIR] [OUT_DIR]" >&2
            exit 2 ;;
    esac
done
if [ $# -gt 2 ]; then
    echo "gpu_image_dry_run.sh: error: $# arguments given; usage: bash scripts/gpu_image_dry_run.sh [ENV_DIR]" \
         "[OUT_DIR]" >&2
    exit 2
fi
env_dir="${1:-/tmp/gpu-image-env}"
mark="$env_dir/.gpu-image-dry-run"  # made by this script: only such a folder is ever removed
if [ ! -e "$env_dir/.built" ] && [ ! -e "$mark" ] && [ -e "$env_dir" ] \
    && { [ ! -d "$env_dir" ] || [ -n "$(ls -A "$env_dir")" ]; }; then
    echo "gpu_image_dry_run.sh: error: ENV_DIR $env_dir exists and was not made by this script (no $mark);" \
         "name a new or empty folder" >&2
    exit 2
fi
shopt -s nullglob
wheels=("$root"/.whl/*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
    echo "gpu_image_dry_run.sh: $root/.whl holds no wheels; fetch them (scripts/gpu_study.sh says how)" >&2
    exit 2
fi
if [ ! -e "$env_dir/.built" ]; then  # the marker is written only after every package installed
    py=""
    candidates=("${PYTHON312:-}" python3.12)
    if command -v pyenv >/dev/null; then
        version="$(pyenv versions --bare 2>/dev/null | awk '/^3\.12/ && !f {print; f = 1}' || true)"
        [ -z "$version" ] || candidates+=("$(pyenv root 2>/dev/null || true)/versions/$version/bin/python")
    fi
    for candidate in "${candidates[@]}"; do  # the first that runs and is 3.12 (a pyenv shim may do neither)
        if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null
        then py="$candidate"; break; fi
    done
    if [ -z "$py" ]; then
        echo "gpu_image_dry_run.sh: no Python 3.12 found (PYTHON312='${PYTHON312:-}', python3.12, pyenv);" \
             "set PYTHON312 to a Python 3.12 interpreter" >&2
        exit 2
    fi
    if [ -e "$mark" ]; then  # half built by an earlier run of this script: made again
        rm -rf "$env_dir"
    fi
    mkdir -p "$env_dir"
    touch "$mark"  # before anything else goes in, so that a run cut short anywhere is made again next time
    "$py" -m venv "$env_dir"
    # the image's versions where KINDS.md gives them; the newest release of the others
    "$env_dir/bin/python" -m pip install -q torch==2.11.0 torchvision==0.26.0 numpy==2.5.2 safetensors==0.8.0 \
        scipy xarray numba h5py pillow click tqdm matplotlib jinja2 markdown-it-py pyyaml packaging pytest
    touch "$env_dir/.built"
fi
if [ $# -ge 2 ]; then
    out="$2"
else  # a new folder, made only once the environment is ready, kept afterwards, readable like the launchers' outputs (mktemp makes it private)
    out="$(mktemp -d "${TMPDIR:-/tmp}/gpu-image-dry-run.XXXXXX")"
    chmod 755 "$out"
fi
trap 'echo "gpu_image_dry_run.sh: failed; the launchers wrote into $out" >&2' ERR
"$env_dir/bin/python" -c "import sys, torch, numpy; print('environment: python', sys.version.split()[0], \
'torch', torch.__version__, 'numpy', numpy.__version__)"
export PYTHON="$env_dir/bin/python"
bash "$root/scripts/gpu_zoo.sh" --out "$out/zoo" --device cpu --sources 6 --deadline-s 120
bash "$root/scripts/gpu_study.sh" --out "$out/study" --device cpu --sources 1 --t60 0.15 --snr 25 --threads 1
echo "gpu_image_dry_run.sh: both launchers passed; outputs in $out"
