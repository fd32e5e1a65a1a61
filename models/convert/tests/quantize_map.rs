//! `quantize`'s report maps each float tensor to the tensor that holds its value in the
//! quantized graph, after the graph is pruned: a Concat whose second part has no int8
//! range leaves its first part's Quantize unread, pruning removes it and renumbers the
//! tensors after it, and the map must follow (stale ids made the accuracy refinement
//! compare an output with another tensor, or with nothing).

mod common;
use common::op;

use cairn_convert::quantize::{quantize, Ranges};
use cairn_convert::Graph;
use cairn_core::op::UnaryFn;
use cairn_core::{DType, OpKind};

#[test]
fn the_value_map_follows_the_pruned_graph() {
    let mut g = Graph::default();
    let x = g.add("x", DType::F32, vec![1, 8]);
    let z = g.add("z", DType::F32, vec![1, 8]);
    let y = g.add("y", DType::F32, vec![1, 16]);
    let e = g.add("e", DType::F32, vec![1, 16]);
    g.ops
        .push(op(OpKind::Unary, &[x], z, vec![UnaryFn::Exp as i32, 0, 0]));
    g.ops.push(op(OpKind::Concat, &[x, z], y, vec![1]));
    g.ops
        .push(op(OpKind::Unary, &[y], e, vec![UnaryFn::Tanh as i32, 0, 0]));
    g.inputs.push(x);
    g.outputs.push(e);
    // x and the result have ranges; z (the Exp) does not, so the Concat stays f32.
    let mut ranges = Ranges::new();
    ranges.insert(x, (-1.0, 1.0));
    ranges.insert(y, (-1.0, 3.0));
    ranges.insert(e, (-1.0, 1.0));
    let (q, rep) = quantize(&g, &ranges).unwrap();
    assert!(!rep.values.is_empty());
    for (&t, &v) in &rep.values {
        let (ft, qt) = (&g.tensors[t], q.tensors.get(v));
        let qt = qt.unwrap_or_else(|| panic!("'{}' maps past the graph ({v})", ft.name));
        assert!(
            qt.name.starts_with(&ft.name) && qt.shape == ft.shape,
            "'{}' {:?} maps to '{}' {:?}",
            ft.name,
            ft.shape,
            qt.name,
            qt.shape
        );
    }
}
