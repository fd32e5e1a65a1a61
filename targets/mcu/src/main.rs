//! cairn on a Cortex-M4F (thumbv7em-none-eabihf), booted in QEMU by `cargo run`:
//!
//! 1. reads eight frames from an 8×8 sensor through embedded-hal's I2C trait (a mock bus in
//!    QEMU serves the bundled samples) and runs the digits model (int8, from flash) on each
//!    with the arena in RAM (linking only the MLP kernel families), and logs each output's bytes (the host test compares them with the host
//!    interpreter, byte for byte) and the instructions per inference;
//! 2. keeps each input's penultimate features in a memory store over a flash-shaped region
//!    (no allocator) and asks it for the nearest earlier observation;
//! 3. trains a new classifier head on those memories for a few steps (cairn-learn, arena
//!    planned up front) and logs the loss and the instructions per step;
//! 4. signs its memories (Ed25519) and writes them as a sync bundle to the host through
//!    semihosting (`target/bundle.cbdl`), streamed with no allocator — what a USB stick
//!    would carry to the next node.
//!
//! Logs go out with defmt over semihosting (decoded by `defmt-print`); the exit status is
//! the verdict.
#![no_std]
#![no_main]

use cortex_m as _;
use defmt_semihosting as _;

#[cfg(any(feature = "stm32f4", feature = "nrf52840"))]
mod boards;
mod clock;
mod sensor;

use cairn_core::{Interpreter, Model};
use cairn_kernels::{family, Select};
use cairn_learn::learner::{arena_bytes, Slot};
use cairn_learn::{AdapterShape, Learner, Optimizer, Sample, TrainConfig};
use cairn_memory::ram::FixedRam;
use cairn_memory::search::{Filter, Hit, Scoring};
use cairn_memory::slice_flash::SliceFlash;
use cairn_memory::{Config, LogStore, Record};
use clock::{exit, insns, paint_stack, stack_used, ticks};
use cortex_m::peripheral::SYST;
use cortex_m_rt::entry;

static MODEL: &[u8] = cairn_core::include_model!("../assets/digits.cairn");
#[cfg(not(any(feature = "stm32f4", feature = "nrf52840")))]
static INPUTS: &[u8] = cairn_core::include_model!("../assets/inputs.bin");
const LABELS: [u16; 8] = [7, 8, 1, 7, 8, 5, 6, 9];
const N: usize = 8;
/// This demo device's identity seed. A product keeps it in protected storage; the host
/// test derives the same public key to build the fleet list that admits it.
pub const DEVICE_SEED: [u8; 32] = *b"cairn-mcu-demo-device-seed-00001";
const DIM: usize = 32;

static mut ARENA: cairn_core::Aligned<[u8; 1024]> = cairn_core::Aligned([0; 1024]);
// Zeroed RAM standing in for a flash region: the store erases the sectors it uses.
static mut FLASH: [u8; 8 * 1024] = [0; 8 * 1024];
static mut STORE_RAM: FixedRam<16, DIM, 8, 128> = FixedRam::new();
static mut LEARN_ARENA: [u32; 2304] = [0; 2304];

/// QEMU: the mock sensor bus, and the bundle goes to a host file through semihosting.
#[cfg(not(any(feature = "stm32f4", feature = "nrf52840")))]
#[entry]
fn main() -> ! {
    let mut file = HostFile::create("target/bundle.cbdl\0");
    let mut failed = file.is_none();
    let mut sink = |b: &[u8]| match file.as_mut() {
        Some(f) => failed |= f.write_all(b).is_err(),
        None => failed = true,
    };
    let ok = run(sensor::MockBus::new(INPUTS), &mut sink);
    drop(file);
    exit(ok && !failed)
}

/// A board: the sensor on the HAL's I2C bus; the bundle goes into a RAM buffer standing in
/// for the removable storage a product would write it to.
#[cfg(any(feature = "stm32f4", feature = "nrf52840"))]
#[entry]
fn main() -> ! {
    // cortex-m-rt hands `main`'s `static mut` over as a `&'static mut`.
    static mut STICK: [u8; 4096] = [0; 4096];
    let stick: &'static mut [u8; 4096] = STICK;
    let mut at = 0;
    // A bundle that does not fit is a failure, never a cut bundle reported as written.
    let mut overflow = false;
    let mut sink = |b: &[u8]| match stick.get_mut(at..at + b.len()) {
        Some(dst) => {
            dst.copy_from_slice(b);
            at += b.len();
        }
        None => overflow = true,
    };
    let ok = run(boards::sensor_bus(), &mut sink);
    if overflow {
        defmt::error!("the bundle does not fit the removable storage");
    }
    exit(ok && !overflow)
}

fn run<B: embedded_hal::i2c::I2c>(bus: B, sink: &mut dyn FnMut(&[u8])) -> bool {
    paint_stack();
    let Some(syst) = clock::start() else {
        return false;
    };
    let syst = &syst;

    let model = match Model::parse_kinds::<{ family::kinds(family::MLP_I8) }>(MODEL) {
        Ok(m) => m,
        Err(e) => {
            defmt::error!("model refused: {}", defmt::Debug2Format(&e));
            return false;
        }
    };
    defmt::println!(
        "model: {=usize} bytes of flash, arena {=usize} bytes, {=usize} ops",
        model.flash_bytes(),
        model.arena_bytes(),
        model.n_ops()
    );
    // SAFETY: main runs once; nothing else touches these statics.
    #[allow(static_mut_refs)]
    let (arena, flash, store_ram, learn_arena) =
        unsafe { (&mut ARENA.0, &mut FLASH, &mut STORE_RAM, &mut LEARN_ARENA) };
    let mut it = match Interpreter::new(model, Select::<{ family::MLP_I8 | family::FAST }>, arena) {
        Ok(it) => it,
        Err(e) => {
            defmt::error!("interpreter: {}", defmt::Debug2Format(&e));
            return false;
        }
    };
    let (mut store, _) = match LogStore::open_in(
        SliceFlash::<1024>::new(flash),
        Config {
            dim: DIM,
            max_records: 16,
            max_payload: 0,
        },
        core::mem::take(store_ram),
    ) {
        Ok(s) => s,
        Err(e) => {
            defmt::error!("store: {}", defmt::Debug2Format(&e));
            return false;
        }
    };

    let key = ed25519_dalek::SigningKey::from_bytes(&DEVICE_SEED);
    let node = cairn_sync::item::node_id(key.verifying_key().as_bytes());
    let mut embs = [[0i8; DIM]; N];
    let mut scales = [0f32; N];
    let mut correct = 0;
    let mut camera = sensor::Grid8x8::new(bus);
    for i in 0..N {
        let mut input = [0f32; 64];
        if camera.read_frame(&mut input).is_err() {
            defmt::error!("sensor read failed");
            return false;
        }
        if it.set_input_f32(0, &input).is_err() {
            return false;
        }
        let t0 = ticks(syst);
        if it.invoke().is_err() {
            defmt::error!("invoke failed");
            return false;
        }
        let t1 = ticks(syst);
        let (Ok(probs), Ok(feats)) = (it.output(0), it.output(1)) else {
            return false;
        };
        let p: &[u8] = probs.data;
        let mut best = 0;
        for k in 0..10 {
            if f32_at(p, k) > f32_at(p, best) {
                best = k;
            }
        }
        correct += (best as u16 == LABELS[i]) as u32;
        defmt::println!(
            "infer {=usize}: class {=usize} (label {=u16}), ~{=u32} instructions",
            i,
            best,
            LABELS[i],
            insns(t0, t1)
        );
        defmt::println!("out0 {=usize} {=[u8]}", i, p);
        defmt::println!("out1 {=usize} {=[u8]}", i, feats.data);
        // Keep the features as an int8 memory (the node's quantization: symmetric, per
        // record; a NaN or infinite feature is refused).
        let f: [f32; DIM] = core::array::from_fn(|k| f32_at(feats.data, k));
        let scale = match cairn_node::features::quantize(&f, &mut embs[i]) {
            Ok(s) => s,
            Err(e) => {
                defmt::error!("features refused: {}", defmt::Debug2Format(&e));
                return false;
            }
        };
        scales[i] = scale;
        let r = Record {
            origin: node,
            timestamp_ms: i as u64,
            label: LABELS[i],
            importance: 100,
            meta: [0; 4],
            scale,
            embedding: &embs[i],
            payload: &[],
        };
        if store.append(&r).is_err() {
            defmt::error!("append failed");
            return false;
        }
    }
    defmt::println!("accuracy on the samples: {=u32}/8", correct);
    // The nearest other memory of the last input.
    let mut hits = [Hit::default(); 2];
    let n = store.search_into(
        &embs[N - 1],
        &Filter::default(),
        &Scoring::default(),
        &mut hits,
    );
    let (used, live) = store.usage();
    defmt::println!(
        "memory: {=usize} records, {=usize} bytes of log ({=usize} live); nearest to the last input: cosine {=f32}, then {=f32}",
        store.len(),
        used,
        live,
        if n > 0 { hits[0].cosine } else { 0.0 },
        if n > 1 { hits[1].cosine } else { 0.0 }
    );

    // A new head trained on the memories (no frozen layer: the features are the input).
    let shape = AdapterShape {
        fin: DIM,
        hidden: 0,
        rank: 0,
        classes: 10,
        batch: N,
    };
    let cfg = TrainConfig {
        optimizer: Optimizer::adam(0.05),
        clip_norm: 5.0,
        weight_decay: 0.0,
        steps: 5,
        replay_per_batch: 0,
        lora_scale: 1.0,
        distill: 0.0,
        seed: 1,
    };
    let bytes: &mut [u8] = bytemuck_bytes(learn_arena);
    let need = arena_bytes(shape, &cfg);
    let mut l = match Learner::new(shape, None, cfg, bytes) {
        Ok(l) => l,
        Err(e) => {
            defmt::error!("learner: {}", defmt::Debug2Format(&e));
            return false;
        }
    };
    if let Err(e) = l.init(None, 1) {
        defmt::error!("learner init: {}", defmt::Debug2Format(&e));
        return false;
    }
    l.begin_candidate();
    let batch: [Sample; N] = core::array::from_fn(|i| Sample {
        emb: &embs[i],
        scale: scales[i],
        label: LABELS[i],
    });
    let mut last = 0.0;
    for step in 0..5 {
        let t0 = ticks(syst);
        let Ok(loss) = l.step(&batch) else {
            return false;
        };
        let t1 = ticks(syst);
        defmt::println!(
            "learn step {=u32}: loss {=f32}, ~{=u32} instructions (arena {=usize} bytes)",
            step,
            loss,
            insns(t0, t1),
            need
        );
        last = loss;
    }
    let right = batch
        .iter()
        .filter(|s| l.predict(Slot::Candidate, s).ok() == Some(s.label))
        .count();
    defmt::println!(
        "after learning: {=usize}/8 memories classified by the new head, loss {=f32}",
        right,
        last
    );
    let ok = export_bundle(&mut store, &key, syst, sink);
    defmt::println!(
        "stack used: {=usize} bytes (size.sh budgets 16384)",
        stack_used()
    );
    ok
}

/// Sign every memory and stream them as a bundle into `sink`.
fn export_bundle<F: embedded_storage::nor_flash::NorFlash, R: cairn_memory::ram::Ram>(
    store: &mut LogStore<F, R>,
    key: &ed25519_dalek::SigningKey,
    syst: &SYST,
    mut sink: &mut dyn FnMut(&[u8]),
) -> bool {
    let mut ids = [[0u8; 16]; 16];
    let n = store.len().min(16);
    for (slot, m) in ids.iter_mut().zip(store.metas()) {
        *slot = m.id;
    }
    let t0 = ticks(syst);
    let mut w = cairn_sync::bundle::BundleWriter::start(key, 0, &mut sink);
    let mut body = [0u8; 128];
    let mut item = [0u8; 256];
    for id in &ids[..n] {
        let Ok(Some(len)) = store.read_record(id, &mut body) else {
            return false;
        };
        let kind = cairn_sync::item::Kind::Record;
        let Ok(len) = cairn_sync::item::sign_into(key, kind, &body[..len], &mut item) else {
            return false;
        };
        w.item(&item[..len], &mut sink);
    }
    w.finish(key, &mut sink);
    let t1 = ticks(syst);
    defmt::println!(
        "sync bundle: {=usize} signed records written, ~{=u32} instructions",
        n,
        insns(t0, t1)
    );
    true
}

/// A file on the host, through semihosting (QEMU: relative to its working directory).
#[cfg(not(any(feature = "stm32f4", feature = "nrf52840")))]
struct HostFile(usize);

#[cfg(not(any(feature = "stm32f4", feature = "nrf52840")))]
impl HostFile {
    /// `name` ends with a NUL byte.
    fn create(name: &str) -> Option<HostFile> {
        use cortex_m_semihosting::{nr, syscall};
        // SAFETY: OPEN reads `len` bytes of a NUL-terminated name.
        let fd = unsafe {
            syscall!(
                OPEN,
                name.as_ptr(),
                nr::open::W_TRUNC_BINARY,
                name.len() - 1
            )
        };
        (fd as isize >= 0).then_some(HostFile(fd))
    }
    fn write_all(&mut self, b: &[u8]) -> Result<(), ()> {
        // SAFETY: WRITE reads `len` bytes from the buffer; it returns how many were not written.
        let left = unsafe { cortex_m_semihosting::syscall!(WRITE, self.0, b.as_ptr(), b.len()) };
        if left == 0 {
            Ok(())
        } else {
            Err(())
        }
    }
}

#[cfg(not(any(feature = "stm32f4", feature = "nrf52840")))]
impl Drop for HostFile {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor OPEN gave.
        unsafe { cortex_m_semihosting::syscall!(CLOSE, self.0) };
    }
}

fn f32_at(b: &[u8], k: usize) -> f32 {
    f32::from_le_bytes([b[4 * k], b[4 * k + 1], b[4 * k + 2], b[4 * k + 3]])
}

fn bytemuck_bytes(a: &mut [u32; 2304]) -> &mut [u8] {
    // A u32 array viewed as bytes: 4-byte aligned, as the learner wants.
    let len = a.len() * 4;
    let ptr = a.as_mut_ptr() as *mut u8;
    // SAFETY: the same memory, u8 has no alignment or validity requirements.
    unsafe { core::slice::from_raw_parts_mut(ptr, len) }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Not through semihosting stdout (it would corrupt the defmt stream).
    exit(false)
}
