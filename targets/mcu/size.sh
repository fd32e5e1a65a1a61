#!/usr/bin/env bash
# Flash and RAM of the two firmware images (`cairn-mcu`: digits, memory store, learner,
# sync bundle; `cls`: the CNN) and of cairn-core + the int8 CNN kernel families alone (the
# `probe` binary, `Select<CNN_I8>`, less its model and less `baseline`: the same startup,
# logger and panic handler without cairn), checked against size-limits.txt: CI fails if
# any grows past its limit.
#   flash = .vector_table + .text + .rodata + .data (the initial values live in flash)
#   RAM   = .data + .bss (the model's arena, the store's RAM side and the learner's arena
#           are in .bss) + the stack the firmware reserves (STACK below)
set -euo pipefail
cd "$(dirname "$0")"
STACK=16384
cargo build --release --quiet
sections() { # name -> size, for an ELF
  readelf -S -W "$1" | sed -n 's/^ *\[ *[0-9]*\] *\([^ ]*\) *[A-Z_]* *[0-9a-f]* *[0-9a-f]* *\([0-9a-f]*\).*/\1 \2/p'
}
measure() {
  local elf=$1 flash=0 ram=0
  while read -r name hex; do
    local n=$((16#$hex))
    case $name in
      .vector_table|.text|.rodata) flash=$((flash + n)) ;;
      .data) flash=$((flash + n)); ram=$((ram + n)) ;;
      .bss|.uninit) ram=$((ram + n)) ;;
    esac
  done < <(sections "$elf")
  echo "$flash $ram"
}
elf=target/thumbv7em-none-eabihf/release
model=$(stat -c %s assets/digits.cairn)
cls_model=$(stat -c %s assets/cls.cairn)
read -r fw_flash fw_ram < <(measure $elf/cairn-mcu)
read -r cnn_flash cnn_ram < <(measure $elf/cls)
read -r probe_flash core_ram < <(measure $elf/probe)
read -r base_flash base_ram < <(measure $elf/baseline)
fw_ram=$((fw_ram + STACK))
cnn_ram=$((cnn_ram + STACK))
core_flash=$((probe_flash - model - base_flash))
echo "firmware (digits):  flash $fw_flash bytes (model $model), RAM $fw_ram bytes (incl. $STACK stack)"
echo "firmware (cls CNN): flash $cnn_flash bytes (model $cls_model), RAM $cnn_ram bytes (incl. $STACK stack)"
echo "core + CNN kernels: flash $core_flash bytes (probe $probe_flash - model $model - runtime baseline $base_flash), static RAM $((core_ram - base_ram)) bytes"
fail=0
while read -r key limit; do
  case $key in
    firmware_flash) v=$fw_flash ;;
    firmware_ram) v=$fw_ram ;;
    cnn_flash) v=$cnn_flash ;;
    cnn_ram) v=$cnn_ram ;;
    core_flash) v=$core_flash ;;
    *) continue ;;
  esac
  if [ "$v" -gt "$limit" ]; then
    echo "SIZE GATE: $key = $v > $limit (targets/mcu/size-limits.txt)"
    fail=1
  fi
done < <(grep -v '^#' size-limits.txt)
exit $fail
