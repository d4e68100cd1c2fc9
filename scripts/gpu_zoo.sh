#!/usr/bin/env bash
# Launch scripts/gpu_zoo.py from this source tree, on a machine where xai-loc is not installed
# (the GPU machine: its own python3 and torch, never `pip install -e .` there).
#
# soundfile (which reads the shipped speech corpus) and its needs cffi and pycparser are not
# installed there; they travel as wheels in .whl/ (ignored by git; carry it). Why wheels and not the
# corpus decoded here into .npy: decoded, the 300 utterances are 58.5 MB of float32, more than the
# ~23 MB the 64 MiB that travels leaves beside the ~41 MB tree, and float16 or int16 would change the
# samples; the three wheels are 1.6 MB, bundle the same libsndfile (1.2.2) as here and decode the very
# same Ogg files, which the preflight checks against the corpus digest taken here. Fetch them, once:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl soundfile==0.14.0 cffi==2.0.0 pycparser==3.0
#
# Usage (all arguments go to scripts/gpu_zoo.py; see its docstring):
#   bash scripts/gpu_zoo.sh --out "$OUT" --device cuda --deadline-s 540
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
for arg; do  # help installs nothing: gpu_zoo.py answers it with the standard library and torch only
    case "$arg" in -h|--help) exec "$python" "$root/scripts/gpu_zoo.py" --help ;; esac
done
if ! "$python" -c "import soundfile" >/dev/null 2>&1; then
    shopt -s nullglob
    # only these three: .whl/ may also hold gpu_study.sh's wheels, and zennit (which imports torchvision
    # at import time) has no place on the training path
    wheels=("$root"/.whl/{soundfile,cffi,pycparser}-*.whl)
    if [ ${#wheels[@]} -eq 0 ]; then
        echo "gpu_zoo.sh: soundfile is not importable and $root/.whl holds no wheels; fetch them (see this file)" >&2
        exit 2
    fi
    site="$(mktemp -d "${TMPDIR:-/tmp}/gpu-zoo-site.XXXXXX")"
    trap 'rm -rf "$site"' EXIT  # the installed wheels live only as long as this run
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "${wheels[@]}"
    export PYTHONPATH="$PYTHONPATH:$site"
    "$python" -c "import soundfile; print('gpu_zoo.sh: soundfile', soundfile.__version__, 'libsndfile', soundfile.__libsndfile_version__)"
fi
"$python" "$root/scripts/gpu_zoo.py" "$@"  # not exec: the trap above removes the temporary site afterwards
