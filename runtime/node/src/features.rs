//! Features → int8, the one way every target stores them: symmetric, one scale per record
//! (the largest magnitude maps to 127), rounding half away from zero. A NaN or infinite
//! value is refused: it would turn the scale (and every later cosine) into NaN.

use crate::NodeError;

/// Quantize `values` into `out` (the same length); returns the scale
/// (`real = scale · int8`). An all-zero vector gets scale 1.
pub fn quantize(values: &[f32], out: &mut [i8]) -> Result<f32, NodeError> {
    if out.len() != values.len() {
        return Err(NodeError::Shape {
            expected: values.len(),
            got: out.len(),
        });
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(NodeError::NonFinite);
    }
    let peak = values.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
    let scale = if peak > 0.0 { peak / 127.0 } else { 1.0 };
    for (q, &v) in out.iter_mut().zip(values) {
        *q = libm::roundf(v / scale).clamp(-127.0, 127.0) as i8;
    }
    Ok(scale)
}

/// [`quantize`] into a new vector.
#[cfg(feature = "alloc")]
pub fn quantize_vec(values: &[f32]) -> Result<(alloc::vec::Vec<i8>, f32), NodeError> {
    let mut out = alloc::vec![0i8; values.len()];
    let scale = quantize(values, &mut out)?;
    Ok((out, scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_maps_to_127_and_non_finite_is_refused() {
        let mut q = [0i8; 4];
        let s = quantize(&[0.5, -1.0, 0.25, 0.0], &mut q).unwrap();
        assert_eq!(s, 1.0 / 127.0);
        assert_eq!(q, [64, -127, 32, 0]);
        assert_eq!(quantize(&[0.0; 4], &mut q), Ok(1.0));
        assert_eq!(
            quantize(&[1.0, f32::NAN, 0.0, 0.0], &mut q),
            Err(NodeError::NonFinite)
        );
        assert_eq!(
            quantize(&[1.0, f32::INFINITY, 0.0, 0.0], &mut q),
            Err(NodeError::NonFinite)
        );
        assert!(matches!(
            quantize(&[1.0; 3], &mut q),
            Err(NodeError::Shape { .. })
        ));
    }
}
