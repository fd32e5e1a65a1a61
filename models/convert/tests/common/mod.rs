//! Helpers shared by the converter's graph-level tests.

use cairn_convert::ir::HOp;
use cairn_core::OpKind;

/// An op on tensors `inputs` writing tensor `out`, named after its kind and output.
pub fn op(kind: OpKind, inputs: &[usize], out: usize, params: Vec<i32>) -> HOp {
    HOp {
        kind,
        inputs: inputs.iter().map(|&t| Some(t)).collect(),
        outputs: vec![out],
        params,
        name: format!("{kind:?}{out}"),
    }
}
