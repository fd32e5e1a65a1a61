use cairn_core::emit::AlignedBytes;
use cairn_core::{Interpreter, Model};
use cairn_kernels::CpuBackend;

/// Parse; when the bytes are accepted, run the model once on zeroed inputs.
pub fn load_and_run(data: &[u8]) {
    let bytes = AlignedBytes::from_slice(data);
    let Ok(m) = Model::parse(bytes.as_slice()) else { return };
    if m.arena_bytes() > 64 << 20 {
        return;
    }
    let mut arena = vec![0u8; m.arena_bytes() + 16];
    if let Ok(mut it) = Interpreter::new(m, CpuBackend, &mut arena) {
        let _ = it.invoke();
    }
}
