#!/usr/bin/env bash
# Build libcairn.a for aarch64 Linux, link the C test against it through include/cairn.h,
# and run it under qemu-aarch64 (binfmt is absent here, so the emulator is called directly).
# Needs: rustup target aarch64-unknown-linux-gnu, gcc-aarch64-linux-gnu, qemu-user.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -p cairn-ffi --release --target aarch64-unknown-linux-gnu --quiet
out=target/aarch64-unknown-linux-gnu/release
auth=$(cat targets/ffi/c/authority.hex)
aarch64-linux-gnu-gcc -O2 -Wall -Werror -DCAIRN_TEST_AUTHORITY="\"$auth\"" -I targets/ffi/include targets/ffi/c/test.c \
  "$out/libcairn.a" -lpthread -ldl -lm -o "$out/cairn-c-test"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/cairn-c-test" \
  targets/mcu/assets/digits.cairn targets/mcu/assets/inputs.bin targets/ffi/c/fleet.bin
