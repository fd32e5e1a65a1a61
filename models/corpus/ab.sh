#!/usr/bin/env bash
# cairn int8 of two conversions of the same corpus models, timed interleaved (A, B, A, B,
# ...) so drift hits both alike: the minimum over REPS of the median of RUNS `cairn run`s
# each, and B/A. DIR_A and DIR_B are `bench.py --out` folders (`<id>/int8.cairn`);
# one-input models only (their sample_000 input).
#
#   models/corpus/ab.sh target/corpus-8 target/corpus-auto yolox_ddddocr_det ppocr_det_v4
#
# Env: CAIRN_BIN (default target/release/cairn), RUNS (20), REPS (3), CAIRN_CORPUS.
set -euo pipefail
A=$1; B=$2; shift 2
BIN=${CAIRN_BIN:-target/release/cairn}; RUNS=${RUNS:-20}; REPS=${REPS:-3}
CACHE=${CAIRN_CORPUS:-$HOME/.cache/cairn/corpus}
ms() { "$BIN" run "$1" -i "$2" --runs "$RUNS" 2>&1 | tail -n 1 | cut -d' ' -f1; }
for id in "$@"; do
  x=$(ls "$CACHE/$id/inputs/sample_000/"*.npy)
  a=(); b=()
  for _ in $(seq "$REPS"); do
    a+=("$(ms "$A/$id/int8.cairn" "$x")")
    b+=("$(ms "$B/$id/int8.cairn" "$x")")
  done
  python3 -c "
a = min(map(float, '${a[*]}'.split())); b = min(map(float, '${b[*]}'.split()))
print(f'$id  A {a:.3f} ms  B {b:.3f} ms  B/A {b / a:.3f}')"
done
