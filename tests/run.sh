#!/usr/bin/env bash
# cairn's test command (README.md, .ci/run). Installs what the tests need when missing:
# rustup targets for the no_std checks, and a Python venv (.venv) holding the
# onnxruntime wheel (its libonnxruntime is the oracle) and onnx==1.22.0 (node tests).
# Then: format check, clippy -D warnings, no_std builds, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# Incremental caches would double the debug target dir; a test run is a cold build anyway.
export CARGO_INCREMENTAL=0

step() { printf '\n== %s\n' "$*"; }

# A stage's build dir is removed once its tests are done (CI machines have little disk):
# set CAIRN_KEEP_BUILDS=1 to keep them for the next run.
prune() {
  [ "${CAIRN_KEEP_BUILDS:-0}" = 1 ] && return 0
  for d in "$@"; do
    [ -e "$d" ] || continue
    echo "pruned $d ($(du -sh "$d" | cut -f1))"
    rm -rf "$d"
  done
  df -h . | awk 'NR==2 {print "disk: " $4 " free"}'
}

step "toolchain"
NOSTD_TARGETS="thumbv7em-none-eabihf thumbv6m-none-eabi riscv32imac-unknown-none-elf"
installed=$(rustup target list --installed)
for t in $NOSTD_TARGETS; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt

step "python venv (tests/requirements.txt: onnxruntime, onnx, numpy, pinned)"
# Reinstall when any installed version differs from the pinned one.
venv_matches() {
  [ -x .venv/bin/python ] || return 1
  local frozen
  frozen=$(.venv/bin/python -m pip freeze 2>/dev/null) || return 1
  grep -v '^#' tests/requirements.txt | grep -v '^$' | while read -r pin; do
    grep -qix "$pin" <<<"$frozen" || { echo "not installed as pinned: $pin"; return 1; }
  done
}
if ! venv_matches; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -r tests/requirements.txt
  venv_matches
fi
ORT_DYLIB_PATH=$(ls "$PWD"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* | head -n 1)
export ORT_DYLIB_PATH
echo "ORT_DYLIB_PATH=$ORT_DYLIB_PATH"

step "cargo fmt --check"
cargo fmt --all --check

step "clippy -D warnings (host workspace and no_std crates)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# tract is `cairn bench`'s third engine, behind a feature: lint that build too.
cargo clippy -p cairn-cli --features tract --all-targets --quiet -- -D warnings
# The GPU backend (wgpu) is the CLI's `gpu` feature: lint that build too.
cargo clippy -p cairn-cli --features gpu --all-targets --quiet -- -D warnings
# The C ABI with ONNX Runtime and the GPU as backends (cairn-ffi's `ort` and `gpu` features).
cargo clippy -p cairn-ffi --features ort,gpu --all-targets --quiet -- -D warnings
cargo clippy -p cairn-core -p cairn-kernels -p cairn-memory -p cairn-learn -p cairn-sync -p cairn-node --target thumbv7em-none-eabihf --quiet -- -D warnings
cargo clippy -p cairn-kernels --features dsp,vfma --target thumbv7em-none-eabihf --quiet -- -D warnings

step "no_std, no alloc builds"
for t in $NOSTD_TARGETS; do
  cargo build -p cairn-core -p cairn-kernels --target "$t" --release --quiet
  cargo build -p cairn-memory --no-default-features --target "$t" --release --quiet
  cargo build -p cairn-memory --target "$t" --release --quiet
  cargo build -p cairn-learn --target "$t" --release --quiet
  cargo build -p cairn-sync --target "$t" --release --quiet
  cargo build -p cairn-node --target "$t" --release --quiet
  echo "ok: cairn-core + cairn-kernels (no alloc), cairn-memory (no alloc and alloc), cairn-learn, cairn-sync, cairn-node (no alloc) for $t"
done

step "device targets: QEMU (Cortex-M4), defmt-print, firmware lint and size gate"
if ! command -v qemu-system-arm >/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-system-arm >/dev/null
fi
command -v defmt-print >/dev/null || cargo install defmt-print --version 1.2.0 --locked --quiet
# From here on a missing QEMU or defmt-print fails the firmware test instead of skipping it.
export CAIRN_REQUIRE_QEMU=1
(cd targets/mcu && cargo fmt --check && cargo clippy --release --quiet -- -D warnings)
# Board builds (not run here): STM32F411 and nRF52840, through their HALs' I2C.
for board in stm32f4 nrf52840; do
  (cd targets/mcu && cargo clippy --release --quiet --features "$board" --target-dir target/boards -- -D warnings \
    && cargo build --release --quiet --features "$board" --target-dir target/boards)
  echo "ok: firmware for $board builds and links"
done
prune targets/mcu/target/boards
targets/mcu/size.sh

step "mobile and edge boards: libcairn.a for Android and iOS, the C test on aarch64 under qemu-aarch64"
installed=$(rustup target list --installed)
for t in aarch64-unknown-linux-gnu aarch64-linux-android aarch64-apple-ios; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user >/dev/null
fi
for t in aarch64-linux-android aarch64-apple-ios; do
  cargo build -p cairn-ffi --release --target "$t" --quiet
  echo "ok: libcairn.a for $t"
done
targets/ffi/c-test.sh
# The device crates' tests on aarch64, under qemu-aarch64 (the runner in
# .cargo/config.toml): kernels (the portable fast paths against the reference), the memory
# store (its power-cut sweep included), learn, sync, core.
cargo test -p cairn-core -p cairn-kernels -p cairn-memory -p cairn-learn -p cairn-sync \
  --features cairn-kernels/std,cairn-memory/std,cairn-sync/std \
  --target aarch64-unknown-linux-gnu --quiet --no-fail-fast 2>&1 | tee target/test-aarch64.log
if [ "${PIPESTATUS[0]}" -ne 0 ] || grep -q "test result: FAILED" target/test-aarch64.log; then
  echo "failing tests on aarch64:"
  grep -E '^test .* \.\.\. FAILED$|^    [A-Za-z_:0-9]+$' target/test-aarch64.log | sed 's/^/  /' | sort -u
  exit 1
fi
prune target/aarch64-unknown-linux-gnu target/aarch64-linux-android target/aarch64-apple-ios

step "32-bit: the device crates' tests on i686 (overflow checks on)"
# Most devices are 32-bit: lengths and offsets from files and the wire must not wrap there.
# The device crates' tests (as on aarch64, and the node's: its contribution slots and
# merges) and the hostile model files, natively as i686 (debug profile: overflow checks and
# debug assertions on), incl. the power-cut sweeps of the memory log and the lineage log.
# About 5 minutes from cold on 2 cores.
# gcc-N-multilib, not gcc-multilib: the meta-package conflicts with gcc-aarch64-linux-gnu.
installed=$(rustup target list --installed)
grep -qx i686-unknown-linux-gnu <<<"$installed" || rustup target add i686-unknown-linux-gnu
if ! echo 'int main(void) { return 0; }' | gcc -m32 -x c - -o target/m32-probe 2>/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "gcc-$(gcc -dumpversion | cut -d. -f1)-multilib" >/dev/null
fi
set +e
cargo test -p cairn-core -p cairn-kernels -p cairn-memory -p cairn-learn -p cairn-sync \
  -p cairn-node --features cairn-kernels/std,cairn-memory/std,cairn-sync/std,cairn-node/std \
  --target i686-unknown-linux-gnu --quiet --no-fail-fast 2>&1 | tee target/test-i686.log
status=${PIPESTATUS[0]}
cargo test -p cairn-tests --test hostile_model --target i686-unknown-linux-gnu --quiet \
  2>&1 | tee -a target/test-i686.log
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
set -e
if [ "$status" -ne 0 ] || grep -q "test result: FAILED" target/test-i686.log; then
  echo "failing tests on i686:"
  grep -E '^test .* \.\.\. FAILED$|^    [A-Za-z_:0-9]+$' target/test-i686.log | sed 's/^/  /' | sort -u
  exit 1
fi
prune target/i686-unknown-linux-gnu

step "GPU: Mesa lavapipe (Vulkan on the CPU) for the cairn-gpu conformance tests"
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    mesa-vulkan-drivers libvulkan1 >/dev/null
fi
# Mesa's WSI warns on every wgpu instance without a runtime dir.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
# With lavapipe installed, a GPU test that finds no adapter fails instead of skipping.
export CAIRN_REQUIRE_GPU=1

step "fuzz: every target for a bounded time from the committed seeds (tests/fuzz/seeds)"
# Long runs (10^7 inputs per target) are offline: tests/fuzz/run_bounded.sh 3600.
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo +nightly install cargo-fuzz --locked --quiet
tests/fuzz/run_bounded.sh "${CAIRN_FUZZ_SECONDS:-10}"
prune tests/fuzz/target

step "tests"
# --no-fail-fast: one failing test binary never hides the others.
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee target/test.log
status=${PIPESTATUS[0]}
# The C ABI's ONNX Runtime and GPU backends are behind cairn-ffi's non-default `ort` and
# `gpu` features (the GPU tests, in tests/backend.rs and the lib's fault test, run on
# lavapipe, installed above; CAIRN_REQUIRE_GPU is set).
cargo test -p cairn-ffi --features ort,gpu --lib --test backend 2>&1 | tee -a target/test.log
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
set -e
passed=$(grep -o '[0-9]* passed' target/test.log | awk '{s+=$1} END {print s+0}')
failed=$(grep -o '[0-9]* failed' target/test.log | awk '{s+=$1} END {print s+0}')
echo
if [ "$status" -ne 0 ] || grep -q "test result: FAILED" target/test.log; then
  echo "failing tests:"
  grep -E '^test .* \.\.\. FAILED$|^    [A-Za-z_:0-9]+$' target/test.log | sed 's/^/  /' | sort -u
  grep -E '^error: (test failed|[0-9]+ targets? failed)' -A20 target/test.log | sed 's/^/  /'
  echo "tests: ${passed} passed, ${failed} failed"
  exit 1
fi
echo "tests: ${passed} passed, ${failed} failed"
