// Put the memory map of the chosen target (QEMU's MPS2-AN386 by default, or a board
// feature) where the linker finds it, and rebuild when the assets change.
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let map = if std::env::var_os("CARGO_FEATURE_STM32F4").is_some() {
        "memory-stm32f4.x"
    } else if std::env::var_os("CARGO_FEATURE_NRF52840").is_some() {
        "memory-nrf52840.x"
    } else {
        "memory.x"
    };
    std::fs::copy(map, out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    for f in [
        "memory.x",
        "memory-stm32f4.x",
        "memory-nrf52840.x",
        "assets/digits.cairn",
        "assets/inputs.bin",
        "assets/cls.cairn",
        "assets/cls_inputs.bin",
        "assets/fleet.cfl",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
}
