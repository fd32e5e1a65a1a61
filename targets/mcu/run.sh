#!/usr/bin/env bash
# cargo's runner for the firmware (.cargo/config.toml). A board build names its chip in a
# symbol (`CAIRN_PROBE_CHIP_<chip>`, src/boards.rs): it is flashed and run with probe-rs,
# as embassy's examples do (`cargo run --release --features stm32f4`). Any other build is
# the QEMU image: booted by qemu-run.sh, the words after the ELF passed on.
set -euo pipefail
elf="$1"
chip=$(readelf -sW "$elf" | sed -n 's/.* CAIRN_PROBE_CHIP_\([A-Za-z0-9_]*\)$/\1/p' | head -n 1)
if [[ -n $chip ]]; then
  exec probe-rs run --chip "$chip" "$elf"
fi
exec "$(dirname "$0")/qemu-run.sh" "$@"
