//! Ops of the `ai.onnx.ml` domain that are plain arithmetic on tensors, as scikit-learn
//! exports (skl2onnx) put them before a network: `Scaler`. The tree ensembles, linear
//! classifiers and label maps of that domain are not supported.

use anyhow::{bail, Result};

use crate::lower::Lower;
use crate::onnx::{Attrs, NodeProto};

/// Lower `n` if it is one of the supported `ai.onnx.ml` ops; false if it is not.
pub(crate) fn lower_ml_op(l: &mut Lower, n: &NodeProto) -> Result<bool> {
    if n.domain != "ai.onnx.ml" {
        return Ok(false);
    }
    match n.op_type.as_str() {
        "Scaler" => scaler(l, n)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// `Scaler`: `y = (x − offset) · scale` per feature (the last axis), each given once for
/// all features or once per feature.
fn scaler(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let a = Attrs(n);
    let x = l.in_t(n, 0)?;
    let shape = l.shape(x);
    let c = shape.last().copied().unwrap_or(1);
    let param = |name: &str| -> Result<Vec<f32>> {
        let v = a
            .floats(name)
            .unwrap_or_else(|| vec![if name == "scale" { 1.0 } else { 0.0 }]);
        if v.len() != 1 && v.len() != c {
            bail!(
                "Scaler: {} {name} values for {c} features (one, or one per feature)",
                v.len()
            );
        }
        Ok(v)
    };
    let (offset, scale) = (param("offset")?, param("scale")?);
    let base = n.output.first().cloned().unwrap_or_default();
    let o =
        l.g.add_f32(format!("{base}:offset"), vec![offset.len()], &offset);
    let s =
        l.g.add_f32(format!("{base}:scale"), vec![scale.len()], &scale);
    let centred = crate::lower_qop::float_node(l, n, "Sub", &[x, o], vec![])?;
    let y = crate::lower_qop::float_node(l, n, "Mul", &[centred, s], vec![])?;
    l.out(n, 0, crate::lower::Val::T(y));
    Ok(())
}
