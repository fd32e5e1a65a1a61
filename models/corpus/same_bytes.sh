#!/usr/bin/env bash
# Whether two cairn builds give the same bytes on every converted corpus model: each
# model's int8 conversion (from `bench.py --out DIR`) on its first two samples, at one
# and two threads, every output compared with the first build's at one thread. A kernel
# change must leave every line "same" (the kernels are bit-exact).
#
#     models/corpus/same_bytes.sh OLD_CAIRN NEW_CAIRN DIR [CACHE]
#
# CACHE is the corpus cache (`fetch.py`, default ~/.cache/cairn/corpus). Set CAIRN_AMX=0,
# CAIRN_VNNI=0 or CAIRN_AVX512=0 to compare the other kernel paths of this host.
set -euo pipefail
old=$1 new=$2 dir=$3 cache=${4:-$HOME/.cache/cairn/corpus}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bad=0
for m in $(ls "$dir"); do
  [ -f "$dir/$m/int8.cairn" ] || continue
  for s in sample_000 sample_001; do
    d=$cache/$m/inputs/$s
    [ -d "$d" ] || continue
    args=()
    for f in "$d"/*.npy; do args+=(--input "$(basename "$f" .npy)=$f"); done
    line="$m $s:"
    for b in old new; do
      bin=$old
      [ $b = new ] && bin=$new
      for t in 1 2; do
        out=$work/$m.$s.$b.$t
        mkdir -p "$out"
        "$bin" run "$dir/$m/int8.cairn" "${args[@]}" --output-dir "$out" --threads $t \
          > "$out.log" 2>&1 || { line="$line $b/$t failed"; bad=1; }
      done
    done
    for k in old.2 new.1 new.2; do
      if diff -rq "$work/$m.$s.old.1" "$work/$m.$s.$k" > /dev/null \
        && [ -n "$(ls "$work/$m.$s.$k")" ]; then
        line="$line $k same"
      else
        line="$line $k DIFFERENT"
        bad=1
      fi
    done
    echo "$line"
  done
done
exit $bad
