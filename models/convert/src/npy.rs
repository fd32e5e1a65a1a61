//! `.npy` files (NumPy's array format, versions 1–3): read as f32, write f32.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn header_field<'a>(h: &'a str, key: &str) -> Result<&'a str> {
    let at = h
        .find(&format!("'{key}'"))
        .ok_or_else(|| anyhow!("npy header lacks '{key}'"))?;
    let rest = &h[at + key.len() + 2..];
    let colon = rest.find(':').ok_or_else(|| anyhow!("bad npy header"))?;
    Ok(rest[colon + 1..].trim_start())
}

pub fn parse(bytes: &[u8]) -> Result<Array> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("not an .npy file (bad magic)");
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                bail!("truncated .npy header");
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => bail!("unsupported .npy version {v}"),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| anyhow!("truncated .npy header"))?;
    let header = std::str::from_utf8(&bytes[start..end])?;
    let descr = header_field(header, "descr")?;
    let descr = descr.trim_start_matches(['\'', '"']);
    let descr = &descr[..descr
        .find(['\'', '"'])
        .ok_or_else(|| anyhow!("bad descr"))?];
    if header_field(header, "fortran_order")?.starts_with("True") {
        bail!("Fortran-ordered .npy arrays are not supported");
    }
    let shape_s = header_field(header, "shape")?
        .strip_prefix('(')
        .ok_or_else(|| anyhow!("bad shape: not a tuple"))?;
    let shape_s = &shape_s[..shape_s.find(')').ok_or_else(|| anyhow!("bad shape"))?];
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().context("bad shape"))
        .collect::<Result<_>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| anyhow!(".npy shape {shape:?} has too many values"))?;
    let body = &bytes[end..];
    let need = |w: usize| -> Result<&[u8]> {
        n.checked_mul(w).and_then(|b| body.get(..b)).ok_or_else(|| {
            anyhow!(
                ".npy data is truncated: {} bytes for {n} values",
                body.len()
            )
        })
    };
    let data: Vec<f32> = match descr {
        "<f4" => need(4)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "<f8" => need(8)?
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        "|u1" | "|b1" => need(1)?.iter().map(|&b| b as f32).collect(),
        "|i1" => need(1)?.iter().map(|&b| b as i8 as f32).collect(),
        "<i4" => need(4)?
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        "<i8" => need(8)?
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        d => bail!(".npy dtype '{d}' is not supported (use float32)"),
    };
    Ok(Array { shape, data })
}

pub fn read(path: &Path) -> Result<Array> {
    parse(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        .with_context(|| format!("parsing {}", path.display()))
}

pub fn to_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    data.iter()
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    out
}

pub fn write(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    std::fs::write(path, to_bytes(shape, data))
        .with_context(|| format!("writing {}", path.display()))
}

/// All `.npy` files of a folder (sorted by name), or the single file given.
pub fn read_dir_or_file(path: &Path) -> Result<Vec<Array>> {
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "npy"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("no .npy files in {}", path.display());
        }
        files.iter().map(|p| read(p)).collect()
    } else {
        Ok(vec![read(path)?])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let b = super::to_bytes(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let a = super::parse(&b).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data[5], 6.5);
        assert!(super::parse(&b[..b.len() - 1]).is_err());
    }

    /// Headers the fuzz target `npy_file` found or aims at: a typed error, never a panic.
    #[test]
    fn hostile_headers_are_errors() {
        let file = |h: &str, body: &[u8]| {
            let mut out = b"\x93NUMPY\x01\x00".to_vec();
            out.extend((h.len() as u16).to_le_bytes());
            out.extend(h.as_bytes());
            out.extend(body);
            out
        };
        for h in [
            "{'descr': '<f4', 'fortran_order': False, 'shape': )}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': 3}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16)}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (18446744073709551615,)}",
        ] {
            assert!(super::parse(&file(h, &[0; 16])).is_err(), "{h}");
        }
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend(u32::MAX.to_le_bytes());
        assert!(super::parse(&v2).is_err());
    }
}
