#!/usr/bin/env bash
# Boot a firmware ELF on QEMU's MPS2-AN386 (Cortex-M4F) and decode its defmt log.
# -icount shift=0: virtual time advances 1 ns per instruction, so the 25 MHz SysTick
# counts one tick per 40 instructions (the firmware reports instructions from it).
# Words after the ELF (`cargo run -- bundle=PATH peer=PATH revoke=PATH`) become the
# firmware's command line (src/host_paths.rs), read through semihosting.
set -euo pipefail
elf="$1"
shift
config="enable=on,target=native,arg=$(basename "$elf")"
for word in "$@"; do
  config+=",arg=${word//,/,,}" # QEMU's option syntax doubles a comma inside a value
done
qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -monitor none \
  -semihosting-config "$config" -icount shift=0 -kernel "$elf" \
  | defmt-print -e "$elf"
