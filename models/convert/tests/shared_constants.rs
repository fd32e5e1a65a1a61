//! Constants stored once (`Graph::share_constants`): weights with the same dtype, shape,
//! quantization and bytes under different names (an unrolled `Loop`'s per-step copies)
//! become one tensor of the file, while a constant with the same bytes but another shape
//! stays its own; the outputs are what they were.

mod common;
use common::{f32_init, model_bytes, node, value};

use cairn_convert::onnx_pb::GraphProto;
use cairn_convert::{convert, Options};
use cairn_core::emit::AlignedBytes;
use cairn_core::model::Storage;
use cairn_core::Model;
use cairn_kernels::host::HostModel;

#[test]
fn copies_of_a_constant_are_stored_once() {
    // y = ((x · W1) · W2) · W3 + b, with W1 = W2 = W3 [4, 4] under three names and b [16]
    // holding the same bytes in another shape.
    let w: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) / 8.0).collect();
    let graph = GraphProto {
        node: vec![
            node("MatMul", &["x", "w1"], &["h1"], vec![]),
            node("MatMul", &["h1", "w2"], &["h2"], vec![]),
            node("MatMul", &["h2", "w3"], &["h3"], vec![]),
            node("Reshape", &["h3", "shape"], &["h4"], vec![]),
            node("Add", &["h4", "b"], &["y"], vec![]),
        ],
        initializer: vec![
            f32_init("w1", &[4, 4], &w),
            f32_init("w2", &[4, 4], &w),
            f32_init("w3", &[4, 4], &w),
            f32_init("b", &[16], &w),
            cairn_convert::onnx_pb::TensorProto {
                name: "shape".into(),
                dims: vec![1],
                data_type: 7,
                raw_data: 16i64.to_le_bytes().to_vec(),
                ..Default::default()
            },
        ],
        input: vec![value("x", 1, &[4, 4])],
        output: vec![value("y", 1, &[16])],
        ..Default::default()
    };
    let model = model_bytes(graph, 17);
    let opts = Options {
        float: true,
        ..Options::default()
    };
    let c = convert(&model, &opts, |_| {}).unwrap();
    assert!(
        c.notes
            .iter()
            .any(|n| n.starts_with("2 constant tensors were copies")),
        "{:?}",
        c.notes
    );
    let bytes = AlignedBytes::from_slice(&c.bytes);
    let m = Model::parse(bytes.as_slice()).unwrap();
    let consts: Vec<Vec<usize>> = (0..m.n_tensors())
        .map(|t| m.tensor(t as u16))
        .filter(|d| matches!(d.storage, Storage::Const(_)))
        .map(|d| d.info.shape.dims().iter().map(|&v| v as usize).collect())
        .filter(|dims: &Vec<usize>| dims.iter().product::<usize>() == 16)
        .collect();
    // One [4, 4] weight for the three MatMuls and the [16] bias.
    assert_eq!(consts.len(), 2, "{consts:?}");
    let x: Vec<f32> = (0..16).map(|i| (i % 5) as f32 - 2.0).collect();
    let mut host = HostModel::new(bytes.as_slice()).unwrap();
    let y = host.run(&[&x]).unwrap().remove(0);
    // The same product by hand.
    let mm = |a: &[f32]| -> Vec<f32> {
        (0..16)
            .map(|k| (0..4).map(|j| a[(k / 4) * 4 + j] * w[j * 4 + k % 4]).sum())
            .collect()
    };
    let want: Vec<f32> = mm(&mm(&mm(&x)))
        .iter()
        .zip(&w)
        .map(|(h, b)| h + b)
        .collect();
    for (a, b) in y.iter().zip(&want) {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "{y:?} against {want:?}"
        );
    }
}
