#!/usr/bin/env bash
# Flash and RAM of the firmware and of cairn-core + the int8 CNN kernel families alone
# (the `probe` binary: `Select<CNN_I8>`),
# checked against size-limits.txt: CI fails if either grows past its limit.
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
model=$(stat -c %s assets/digits.cairn)
read -r fw_flash fw_ram < <(measure target/thumbv7em-none-eabihf/release/cairn-mcu)
read -r core_flash core_ram < <(measure target/thumbv7em-none-eabihf/release/probe)
fw_ram=$((fw_ram + STACK))
echo "firmware:          flash $fw_flash bytes (model $model), RAM $fw_ram bytes (incl. $STACK stack)"
echo "core + CNN kernels: flash $((core_flash - model)) bytes (without the model), static RAM $core_ram bytes"
fail=0
while read -r key limit; do
  case $key in
    firmware_flash) v=$fw_flash ;;
    firmware_ram) v=$fw_ram ;;
    core_flash) v=$((core_flash - model)) ;;
    *) continue ;;
  esac
  if [ "$v" -gt "$limit" ]; then
    echo "SIZE GATE: $key = $v > $limit (targets/mcu/size-limits.txt)"
    fail=1
  fi
done < <(grep -v '^#' size-limits.txt)
exit $fail
