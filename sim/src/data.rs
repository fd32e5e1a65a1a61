//! What the simulated devices see: the digits model (`targets/mcu/assets/digits.cairn`, the
//! firmware's: 10 classes, 32-wide features as output 1) and the bundled digits training
//! images (`models/zoo/digits/train_x.npy`, scikit-learn's digits), each with its label.

use std::path::{Path, PathBuf};

use cairn_core::emit::AlignedBytes;

pub struct Assets {
    pub model: AlignedBytes,
    pub inputs: Vec<Vec<f32>>,
    pub labels: Vec<u16>,
}

/// The repository root this crate was built in.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The payload of a version 1 `.npy` file.
fn npy(path: &Path) -> Result<Vec<u8>, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if b.len() < 10 || &b[1..6] != b"NUMPY" {
        return Err(format!("{}: not a .npy file", path.display()));
    }
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    Ok(b.get(10 + hlen..).unwrap_or_default().to_vec())
}

impl Assets {
    pub fn load(root: &Path) -> Result<Assets, String> {
        let m = root.join("targets/mcu/assets/digits.cairn");
        let model = std::fs::read(&m).map_err(|e| format!("{}: {e}", m.display()))?;
        let d = root.join("models/zoo/digits");
        let x = npy(&d.join("train_x.npy"))?;
        let y = npy(&d.join("train_y.npy"))?;
        let inputs = x
            .chunks_exact(64 * 4)
            .map(|r| {
                r.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            })
            .collect();
        let labels = y.chunks_exact(8).map(|c| c[0] as u16).collect();
        Ok(Assets {
            model: AlignedBytes::from_slice(&model),
            inputs,
            labels,
        })
    }
}
