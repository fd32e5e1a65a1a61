//! `.npy` files (NumPy's array format, versions 1–3): read as f32 (float16/32/64, signed
//! and unsigned integers of 1–8 bytes, bool; either byte order; C or Fortran order),
//! write f32.

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
    let fortran = header_field(header, "fortran_order")?.starts_with("True");
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
    let (kind, width, big) = dtype(descr)?;
    let body = n
        .checked_mul(width)
        .and_then(|b| bytes[end..].get(..b))
        .ok_or_else(|| {
            anyhow!(
                ".npy data is truncated: {} bytes for {n} values of {width} bytes",
                bytes.len() - end
            )
        })?;
    let data: Vec<f32> = body
        .chunks_exact(width)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..width].copy_from_slice(c);
            if big {
                b[..width].reverse();
            }
            decode(kind, width, b)
        })
        .collect();
    let data = if fortran && shape.len() > 1 {
        to_c_order(&shape, &data)
    } else {
        data
    };
    Ok(Array { shape, data })
}

/// A dtype string's kind (`f`, `i`, `u` or `b`), width in bytes and byte order (true:
/// big-endian). NumPy writes `<` or `>` for multi-byte types and `|` for single bytes;
/// `=` is the writer's native order, which every NumPy platform in use writes as `<`.
fn dtype(descr: &str) -> Result<(u8, usize, bool)> {
    let refuse = || anyhow!(".npy dtype '{descr}' is not supported (use float32)");
    // Every dtype string NumPy writes is ASCII; the splits below are by byte.
    if !descr.is_ascii() {
        return Err(refuse());
    }
    let (order, rest) = descr.split_at(descr.len().min(1));
    let big = match order {
        "<" | "|" | "=" => false,
        ">" => true,
        _ => return Err(refuse()),
    };
    let (kind, width) = rest.split_at(rest.len().min(1));
    let width: usize = width.parse().map_err(|_| refuse())?;
    let ok = match kind {
        "f" => matches!(width, 2 | 4 | 8),
        "i" | "u" => matches!(width, 1 | 2 | 4 | 8),
        "b" => width == 1,
        _ => false,
    };
    if !ok {
        return Err(refuse());
    }
    Ok((kind.as_bytes()[0], width, big))
}

/// One value, its `width` bytes little-endian at the front of `b`, as f32 (integers past
/// 2^24 round to the nearest f32).
fn decode(kind: u8, width: usize, b: [u8; 8]) -> f32 {
    let u = u64::from_le_bytes(b);
    match (kind, width) {
        (b'f', 2) => f16_to_f32(u as u16),
        (b'f', 4) => f32::from_bits(u as u32),
        (b'f', _) => f64::from_bits(u) as f32,
        (b'i', 1) => u as u8 as i8 as f32,
        (b'i', 2) => u as u16 as i16 as f32,
        (b'i', 4) => u as u32 as i32 as f32,
        (b'i', _) => u as i64 as f32,
        // u1..u8 and b1: the value as stored.
        _ => u as f32,
    }
}

/// IEEE half precision to f32, exactly (subnormals, infinities and NaN included).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let man = f32::from(h & 0x3ff);
    match exp {
        0 => sign * man * (2.0f32).powi(-24),
        31 if man == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + man / 1024.0) * (2.0f32).powi(e - 15),
    }
}

/// Column-major values (a Fortran-ordered file: the first index varies fastest) in
/// row-major order.
fn to_c_order(shape: &[usize], data: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len());
    let mut idx = vec![0usize; shape.len()];
    // The column-major stride of each dim.
    let mut strides = Vec::with_capacity(shape.len());
    let mut s = 1usize;
    for &d in shape {
        strides.push(s);
        s *= d;
    }
    for _ in 0..data.len() {
        let at: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.push(data[at]);
        // Row-major increment: the last index fastest.
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
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

    fn file(h: &str, body: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((h.len() as u16).to_le_bytes());
        out.extend(h.as_bytes());
        out.extend(body);
        out
    }

    /// A dtype string with a multi-byte character where the byte order or kind goes (a
    /// fuzzer's find) is refused, not split inside the character.
    #[test]
    fn a_non_ascii_dtype_is_refused() {
        for descr in ["\u{113}2", "<\u{113}4", "\u{113}", "<f\u{663}"] {
            let h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2, 6), }}");
            match super::parse(&file(&h, &[0; 48])) {
                Err(e) => assert!(e.to_string().contains("not supported"), "{descr}: {e}"),
                Ok(_) => panic!("dtype '{descr}' was accepted"),
            }
        }
    }

    /// A Fortran-ordered file (NumPy writes one for any array whose memory is column-major,
    /// such as a transpose) reads back in row-major order.
    #[test]
    fn fortran_order_reads_as_row_major() {
        let col_major: Vec<u8> = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = super::parse(&file(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
            &col_major,
        ))
        .unwrap();
        assert_eq!(a.shape, [2, 3]);
        assert_eq!(a.data, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // Three dims: element (i, j, k) of a 2x3x2 array sits at i + 2j + 6k.
        let shape = [2usize, 3, 2];
        let mut body = [0f32; 12];
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..2 {
                    body[i + 2 * j + 6 * k] = (100 * i + 10 * j + k) as f32;
                }
            }
        }
        let bytes: Vec<u8> = body.iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = super::parse(&file(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 2), }",
            &bytes,
        ))
        .unwrap();
        assert_eq!(a.shape, shape);
        let want: Vec<f32> = (0..2)
            .flat_map(|i| {
                (0..3).flat_map(move |j| (0..2).map(move |k| (100 * i + 10 * j + k) as f32))
            })
            .collect();
        assert_eq!(a.data, want);
    }

    /// Every dtype NumPy writes for real-valued data: half, single and double floats,
    /// integers of 1 to 8 bytes, bool, in either byte order.
    #[test]
    fn dtypes_and_byte_orders() {
        let read = |descr: &str, body: &[u8]| {
            super::parse(&file(
                &format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,), }}"),
                body,
            ))
            .unwrap()
            .data
        };
        // float16: 1.5 (0x3e00) and -65504 (0xfbff, the largest finite half).
        assert_eq!(read("<f2", &[0x00, 0x3e, 0xff, 0xfb]), [1.5, -65504.0]);
        assert_eq!(read(">f2", &[0x3e, 0x00, 0xfb, 0xff]), [1.5, -65504.0]);
        // A subnormal half (2^-24) and infinity.
        assert_eq!(
            read("<f2", &[0x01, 0x00, 0x00, 0x7c]),
            [2f32.powi(-24), f32::INFINITY]
        );
        assert!(read("<f2", &[0x01, 0x7e, 0, 0])[0].is_nan());
        assert_eq!(
            read(">f4", &[0x3f, 0xc0, 0, 0, 0xc0, 0x20, 0, 0]),
            [1.5, -2.5]
        );
        let f8: Vec<u8> = [0.25f64, -3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(read("<f8", &f8), [0.25, -3.0]);
        // int16 audio samples, both orders, and the unsigned reading of the same bytes.
        assert_eq!(read("<i2", &[0x00, 0x80, 0xff, 0x7f]), [-32768.0, 32767.0]);
        assert_eq!(read(">i2", &[0x80, 0x00, 0x7f, 0xff]), [-32768.0, 32767.0]);
        assert_eq!(read("<u2", &[0x00, 0x80, 0xff, 0x7f]), [32768.0, 32767.0]);
        assert_eq!(read("|i1", &[0xff, 0x7f]), [-1.0, 127.0]);
        assert_eq!(read("|u1", &[0xff, 0x7f]), [255.0, 127.0]);
        assert_eq!(read("|b1", &[1, 0]), [1.0, 0.0]);
        let i4: Vec<u8> = [-7i32, 1 << 20]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(read("<i4", &i4), [-7.0, 1048576.0]);
        let u4: Vec<u8> = [u32::MAX, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(read("<u4", &u4), [u32::MAX as f32, 3.0]);
        let i8: Vec<u8> = [-5i64, 30522]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        assert_eq!(read(">i8", &i8), [-5.0, 30522.0]);
        let u8s: Vec<u8> = [7u64, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(read("<u8", &u8s), [7.0, 9.0]);
        // Not real numbers, or not a width NumPy has: refused by name.
        for d in ["<c8", "<U3", "|O", "<f3", "<i16", "|b2", "f4", "<", ""] {
            let e = super::parse(&file(
                &format!("{{'descr': '{d}', 'fortran_order': False, 'shape': (1,), }}"),
                &[0; 16],
            ));
            assert!(e.is_err(), "{d}");
        }
    }

    /// Headers the fuzz target `npy_file` found or aims at: a typed error, never a panic.
    #[test]
    fn hostile_headers_are_errors() {
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
