#!/usr/bin/env bash
# #20's offline evaluation on a CPU machine, every step resumable: rerun the same command after an
# interruption and each step continues where it stopped (finished prompts, zero-shot parts, runs).
#
#   1. the v2 zoo: m = 50 prompt tokens, 10 epochs, the standardised head, bf16 where the CPU has
#      it, one prompt per offline task (train_sources skips the finished ones and resumes a cut
#      one from its last epoch checkpoint in $STORAGE), copied into prompt_zoo/offline-v2;
#   2. its zero-shot matrix over the init-probe protocol's 5 split draws (only missing or changed
#      sources' rows are computed: launch/zero_shot.py keys them by the prompt file's sha256), with
#      the screen of its targets beside it (screen.md: the eligible sources' zero-shot spread);
#      MATRIX_TARGETS="count dsprites-scale ..." computes only those columns (the LOO computes the
#      others itself, target by target, and orders the covered ones first);
#   3. the init-probe leave-one-out, 5 seeds, the widest zero-shot spread first, target by target,
#      with a 3-seed scaling curve on the first target, into reports/offline; LOO_TARGETS="a b"
#      runs those targets as a chunk of the same folder instead (each target's own prompt and its
#      same-image tasks' prompts are left out either way).
#      Each invocation is a chunk of at most CHUNK_MINUTES (70) plus its longest step, so under 2 h.
#
# The two Fashion-MNIST tasks need the Debian package (`apt-get install dataset-fashion-mnist`);
# without it the suite has 17 tasks, with it 19.
#
# Usage (from anywhere; about 10 min per prompt and 12 min per matrix column (19 prompts at m = 50,
# about 2,000 distinct images per target) on 2 cores):
#   setsid bash bench/offline_pipeline.sh > /tmp/offline_pipeline.log 2>&1 &
#   STEPS="zoo matrix" bash bench/offline_pipeline.sh     # only some steps
# Pause it while tests or benchmarks run (Ray workers and torch threads both spin):
#   kill -STOP -<pgid>; pkill -STOP -f 'ray::'   ...   then -CONT
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/work/evals/offline-v2}        # where the zoo trains (a copy lands in the repo)
STORAGE=${STORAGE:-/tmp/zoo2}                # Ray Train's checkpoints of the prompt in progress
ZOO=${ZOO:-prompt_zoo/offline-v2}            # offline-v3: WORK=/work/evals/offline-v3 STORAGE=/tmp/zoo3,
                                             # seeded with v2's prompts and manifest (its README says how)
STEPS=${STEPS:-zoo matrix loo}
export RAY_TMPDIR=${RAY_TMPDIR:-/tmp/ray_offline}

for step in $STEPS; do
  echo "== $step $(date -u +%FT%TZ)"
  case $step in
    zoo)
      python launch/train_sources.py --suite offline --out "$WORK" --epochs 10 --num-prompt-tokens 50 \
        --head standardised --num-cpus 2 --storage "$STORAGE"
      mkdir -p "$ZOO"
      cp "$WORK"/*.safetensors "$WORK"/manifest.json "$ZOO"/
      python -m hgprompt_ray.prompts report "$ZOO" --probe-json bench/results/linear_probe.json \
        bench/results/linear_probe_new_targets.json bench/results/linear_probe_scene_red.json --out "$WORK/README.md"
      echo "the table of $ZOO is in $WORK/README.md: merge it into $ZOO/README.md";;
    matrix)
      # shellcheck disable=SC2086  # MATRIX_TARGETS is a list of names
      python launch/zero_shot.py --prompts "$ZOO" --out "$ZOO/zero_shot" --split-seeds 0 1 2 3 4 \
        ${MATRIX_TARGETS:+--targets $MATRIX_TARGETS};;
    loo)
      which=(--leave-one-out)
      # shellcheck disable=SC2206  # LOO_TARGETS is a list of names
      [ -n "${LOO_TARGETS:-}" ] && which=(--targets $LOO_TARGETS)
      # chunks of at most CHUNK_MINUTES plus one step (a split draw's weights: ~25 min, 46 with the
      # scaling points; a target's init-probe runs: ~30 min): each invocation stops at the first step
      # boundary past the limit with exit code 75 and the next one continues
      until python launch/evaluate.py "${which[@]}" \
        --prompts "$ZOO" --protocol init-probe --seeds 5 --scaling-seeds 3 --output reports/offline \
        --num-cpus 2 --no-dashboard --max-minutes "${CHUNK_MINUTES:-70}"; do
        code=$?
        [ "$code" -eq 75 ] || exit "$code"
        echo "== loo: the next chunk $(date -u +%FT%TZ)"
      done;;
    *) echo "unknown step $step (zoo, matrix, loo)" >&2; exit 2;;
  esac
done
echo "== done $(date -u +%FT%TZ)"
