//! Decomposed LayerNorms, as exporters write them, become one `LayerNorm` op (between two
//! Transposes when the normalised axis is not the last): `(x − mean)²` or `E[x²] − E[x]²`
//! variances, squares as `Mul` or `Pow`, means as `ReduceMean` or `ReduceSum · 1/N` with
//! `keepdims = 0` and a `Reshape` back, `1/Sqrt`, `Reciprocal(Sqrt)` or `Div`, ε on either
//! side of its `Add`, γ and β in several orders or absent, and the `x·k + (β − mean·k)`
//! form of Keras/TF. Each converted model is compared with a float LayerNorm computed here;
//! look-alikes that are not a LayerNorm (two different ε, means over different axes, ε
//! outside the square root) stay as they are. Seeded (`CAIRN_SEED` replays).

mod common;
use common::{int_attr, ints_attr, node, value};

use cairn_convert::onnx_pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
};
use cairn_convert::{convert, Converted, Options};
use cairn_core::emit::AlignedBytes;
use cairn_core::OpKind;
use cairn_kernels::host::HostModel;
use prost::Message;

fn uniform(state: &mut u64, lo: f32, hi: f32) -> f32 {
    let z = common::splitmix(state);
    lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
}

/// An ONNX graph under construction: nodes, initializers, fresh value names.
struct Net {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    next: usize,
}

impl Net {
    fn new() -> Net {
        Net {
            nodes: vec![],
            inits: vec![],
            next: 0,
        }
    }
    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("v{}", self.next)
    }
    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh();
        self.nodes.push(node(op, inputs, &[&out], attrs));
        out
    }
    fn f32(&mut self, dims: &[i64], v: &[f32]) -> String {
        let name = self.fresh();
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type: 1,
            raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }
    fn i64s(&mut self, v: &[i64]) -> String {
        let name = self.fresh();
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: vec![v.len() as i64],
            data_type: 7,
            raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }
    fn mean(&mut self, x: &str, axes: &[i64]) -> String {
        self.op("ReduceMean", &[x], vec![ints_attr("axes", axes)])
    }
    fn model(self, y: &str, shape: &[usize]) -> Vec<u8> {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let mut nodes = self.nodes;
        nodes.push(node("Identity", &[y], &["y"], vec![]));
        ModelProto {
            ir_version: 7,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                node: nodes,
                initializer: self.inits,
                input: vec![value("x", 1, &dims)],
                output: vec![value("y", 1, &dims)],
                name: "g".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// How the variance and the scaling are written.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Form {
    /// ReduceMean(Pow(x − m, 2)), + ε, Sqrt, Div, · γ, + β (PyTorch's decomposition).
    CenteredPowDiv,
    /// ReduceMean(x·x) − m·m, ε + var, Reciprocal(Sqrt), γ folded into the inverse (Flax).
    MomentsReciprocal,
    /// ReduceSum(Pow(x, 2))·1/N − m², keepdims 0 + Reshape, Max(0, ·), Div(1, Sqrt)
    /// (jax2tf, magika).
    SumsKeepdims0,
    /// (x − m)·(x − m) via Mul, γ applied before the Div by the standard deviation.
    GammaFirst,
    /// x·k + (β − m·k) with k = γ / Sqrt(var + ε) (tf.nn.batch_normalization, Keras).
    BatchNormStyle,
}

const FORMS: [Form; 5] = [
    Form::CenteredPowDiv,
    Form::MomentsReciprocal,
    Form::SumsKeepdims0,
    Form::GammaFirst,
    Form::BatchNormStyle,
];

/// A LayerNorm of `x` of `shape` over `axes` written in `form`; γ/β of the reduced axes'
/// shape broadcast against x (absent when `affine` is false). `eps2` (when given) is a
/// second ε used by one of the two branches that read the inverse deviation (a look-alike).
#[allow(clippy::too_many_arguments)]
fn layer_norm_net(
    form: Form,
    shape: &[usize],
    axes: &[usize],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    eps2: Option<f32>,
) -> Vec<u8> {
    let mut n = Net::new();
    let ax: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
    // γ/β dims: the reduced axes' sizes, 1 elsewhere, right-aligned from the first
    // reduced axis.
    let cdims: Vec<i64> = (axes[0]..shape.len())
        .map(|a| {
            if axes.contains(&a) {
                shape[a] as i64
            } else {
                1
            }
        })
        .collect();
    let gamma = gamma.map(|g| n.f32(&cdims, g));
    let beta = beta.map(|b| n.f32(&cdims, b));
    let eps_t = n.f32(&[], &[eps]);
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let y = match form {
        Form::CenteredPowDiv => {
            let m = n.mean("x", &ax);
            let d = n.op("Sub", &["x", &m], vec![]);
            let two = n.f32(&[], &[2.0]);
            let sq = n.op("Pow", &[&d, &two], vec![]);
            let v = n.mean(&sq, &ax);
            let ve = n.op("Add", &[&v, &eps_t], vec![]);
            let s = n.op("Sqrt", &[&ve], vec![]);
            let mut y = n.op("Div", &[&d, &s], vec![]);
            if let Some(g) = &gamma {
                y = n.op("Mul", &[&y, g], vec![]);
            }
            if let Some(b) = &beta {
                y = n.op("Add", &[&y, b], vec![]);
            }
            y
        }
        Form::MomentsReciprocal => {
            let m = n.mean("x", &ax);
            let xx = n.op("Mul", &["x", "x"], vec![]);
            let e2 = n.mean(&xx, &ax);
            let mm = n.op("Mul", &[&m, &m], vec![]);
            let v = n.op("Sub", &[&e2, &mm], vec![]);
            let ve = n.op("Add", &[&eps_t, &v], vec![]);
            let s = n.op("Sqrt", &[&ve], vec![]);
            let mut k = n.op("Reciprocal", &[&s], vec![]);
            if let Some(g) = &gamma {
                k = n.op("Mul", &[&k, g], vec![]);
            }
            let d = n.op("Sub", &["x", &m], vec![]);
            let mut y = n.op("Mul", &[&d, &k], vec![]);
            if let Some(b) = &beta {
                y = n.op("Add", &[b, &y], vec![]);
            }
            y
        }
        Form::SumsKeepdims0 => {
            let keep_shape: Vec<i64> = (0..shape.len())
                .map(|a| {
                    if axes.contains(&a) {
                        1
                    } else {
                        shape[a] as i64
                    }
                })
                .collect();
            let keep_shape = n.i64s(&keep_shape);
            let axes_t = n.i64s(&ax);
            let inv_n = n.f32(&[], &[1.0 / count as f32]);
            let sum = n.op("ReduceSum", &["x", &axes_t], vec![int_attr("keepdims", 0)]);
            let m = n.op("Mul", &[&sum, &inv_n], vec![]);
            let two = n.f32(&[], &[2.0]);
            let sq = n.op("Pow", &["x", &two], vec![]);
            let sum2 = n.op("ReduceSum", &[&sq, &axes_t], vec![int_attr("keepdims", 0)]);
            let e2 = n.op("Mul", &[&sum2, &inv_n], vec![]);
            let mm = n.op("Mul", &[&m, &m], vec![]);
            let v = n.op("Sub", &[&e2, &mm], vec![]);
            let zero = n.f32(&[], &[0.0]);
            let v = n.op("Max", &[&zero, &v], vec![]);
            let v = n.op("Reshape", &[&v, &keep_shape], vec![]);
            let ve = n.op("Add", &[&v, &eps_t], vec![]);
            let s = n.op("Sqrt", &[&ve], vec![]);
            let one = n.f32(&[], &[1.0]);
            let mut k = n.op("Div", &[&one, &s], vec![]);
            if let Some(g) = &gamma {
                k = n.op("Mul", &[&k, g], vec![]);
            }
            let mk = n.op("Reshape", &[&m, &keep_shape], vec![]);
            let d = n.op("Sub", &["x", &mk], vec![]);
            let mut y = n.op("Mul", &[&d, &k], vec![]);
            if let Some(b) = &beta {
                y = n.op("Add", &[&y, b], vec![]);
            }
            y
        }
        Form::GammaFirst => {
            let m = n.mean("x", &ax);
            let d = n.op("Sub", &["x", &m], vec![]);
            let sq = n.op("Mul", &[&d, &d], vec![]);
            let v = n.mean(&sq, &ax);
            let ve = n.op("Add", &[&v, &eps_t], vec![]);
            let s = n.op("Sqrt", &[&ve], vec![]);
            let mut t = d.clone();
            if let Some(g) = &gamma {
                t = n.op("Mul", &[g, &d], vec![]);
            }
            let mut y = n.op("Div", &[&t, &s], vec![]);
            if let Some(b) = &beta {
                y = n.op("Add", &[&y, b], vec![]);
            }
            y
        }
        Form::BatchNormStyle => {
            let m = n.mean("x", &ax);
            let d = n.op("Sub", &["x", &m], vec![]);
            let sq = n.op("Mul", &[&d, &d], vec![]);
            let v = n.mean(&sq, &ax);
            let inverse = |n: &mut Net, e: &str| {
                let ve = n.op("Add", &[&v, e], vec![]);
                let s = n.op("Sqrt", &[&ve], vec![]);
                let mut k = n.op("Reciprocal", &[&s], vec![]);
                if let Some(g) = &gamma {
                    k = n.op("Mul", &[&k, g], vec![]);
                }
                k
            };
            let k = inverse(&mut n, &eps_t);
            let k2 = match eps2 {
                Some(e2) => {
                    let e2 = n.f32(&[], &[e2]);
                    inverse(&mut n, &e2)
                }
                None => k.clone(),
            };
            let xk = n.op("Mul", &["x", &k], vec![]);
            let mk = n.op("Mul", &[&m, &k2], vec![]);
            let shift = match &beta {
                Some(b) => n.op("Sub", &[b, &mk], vec![]),
                None => n.op("Neg", &[&mk], vec![]),
            };
            n.op("Add", &[&xk, &shift], vec![])
        }
    };
    n.model(&y, shape)
}

/// LayerNorm over `axes` in f64: (x − mean)/sqrt(var + ε)·γ + β.
fn reference(
    x: &[f32],
    shape: &[usize],
    axes: &[usize],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
) -> Vec<f32> {
    let rank = shape.len();
    let mut strides = vec![1usize; rank];
    for a in (0..rank - 1).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    let (mut group, mut inner) = (vec![], vec![]);
    for k in 0..x.len() {
        let (mut o, mut i) = (0, 0);
        for (a, (&stride, &dim)) in strides.iter().zip(shape).enumerate() {
            let c = k / stride % dim;
            if axes.contains(&a) {
                i = i * dim + c;
            } else {
                o = o * dim + c;
            }
        }
        group.push(o);
        inner.push(i);
    }
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let groups = x.len() / count;
    let mut mean = vec![0f64; groups];
    for (&v, &o) in x.iter().zip(&group) {
        mean[o] += v as f64 / count as f64;
    }
    let mut var = vec![0f64; groups];
    for (&v, &o) in x.iter().zip(&group) {
        var[o] += (v as f64 - mean[o]).powi(2) / count as f64;
    }
    (0..x.len())
        .map(|k| {
            let o = group[k];
            let n = (x[k] as f64 - mean[o]) / (var[o] + eps as f64).sqrt();
            let g = gamma.map_or(1.0, |g| g[inner[k]] as f64);
            let b = beta.map_or(0.0, |b| b[inner[k]] as f64);
            (n * g + b) as f32
        })
        .collect()
}

fn run(c: &Converted, x: &[f32]) -> Vec<f32> {
    let bytes = AlignedBytes::from_slice(&c.bytes);
    let mut m = HostModel::new(bytes.as_slice()).expect("load");
    m.run(&[x]).expect("run").remove(0)
}

fn count(c: &Converted, kind: OpKind) -> usize {
    c.float_graph.ops.iter().filter(|o| o.kind == kind).count()
}

/// Shapes and reduced axes: the last axis, a middle (channel) axis, two trailing axes and
/// two axes of which one is not trailing.
const CASES: [(&[usize], &[usize]); 4] = [
    (&[2, 3, 8], &[2]),
    (&[2, 8, 5], &[1]),
    (&[2, 3, 4, 5], &[2, 3]),
    (&[2, 4, 3, 5], &[1, 3]),
];

#[test]
fn every_spelling_over_every_axis_is_one_layer_norm() {
    let seed = common::seed(23);
    let mut state = seed;
    for form in FORMS {
        for (shape, axes) in CASES {
            for affine in [true, false] {
                let count_inner: usize = axes.iter().map(|&a| shape[a]).product();
                let numel: usize = shape.iter().product();
                let gamma: Vec<f32> = (0..count_inner)
                    .map(|_| uniform(&mut state, 0.5, 1.5))
                    .collect();
                let beta: Vec<f32> = (0..count_inner)
                    .map(|_| uniform(&mut state, -0.5, 0.5))
                    .collect();
                let (g, b) = if affine {
                    (Some(gamma.as_slice()), Some(beta.as_slice()))
                } else {
                    (None, None)
                };
                let eps = 1e-5;
                let onnx = layer_norm_net(form, shape, axes, g, b, eps, None);
                let what =
                    format!("CAIRN_SEED={seed} {form:?} {shape:?} over {axes:?} affine {affine}");
                let c = convert(&onnx, &Options::default(), |_| {})
                    .unwrap_or_else(|e| panic!("{what}: {e:#}"));
                assert_eq!(count(&c, OpKind::LayerNorm), 1, "{what}");
                assert_eq!(
                    count(&c, OpKind::ReduceMean) + count(&c, OpKind::Reduce),
                    0,
                    "{what}"
                );
                let trailing = axes
                    .iter()
                    .enumerate()
                    .all(|(j, &a)| a == shape.len() - axes.len() + j);
                let moves = if trailing { 0 } else { 2 };
                assert_eq!(
                    c.float_graph.ops.len(),
                    1 + moves,
                    "{what}: {:?}",
                    c.float_graph.ops
                );
                // Inputs with a non-zero mean, and one whose variance is near ε.
                for scale in [3.0f32, 0.01] {
                    let x: Vec<f32> = (0..numel)
                        .map(|_| uniform(&mut state, -scale, scale) + scale)
                        .collect();
                    let want = reference(&x, shape, axes, g, b, eps);
                    let got = run(&c, &x);
                    for (k, (p, q)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                            "{what} scale {scale}: element {k}: {p} vs {q}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn look_alikes_are_not_fused() {
    let (shape, axes): (&[usize], &[usize]) = (&[2, 8, 5], &[2]);
    let gamma = vec![1.5f32; 5];
    let beta = vec![0.25f32; 5];
    // Two different ε on the two branches of the Keras form.
    let onnx = layer_norm_net(
        Form::BatchNormStyle,
        shape,
        axes,
        Some(&gamma),
        Some(&beta),
        1e-5,
        Some(1e-3),
    );
    let c = convert(&onnx, &Options::default(), |_| {}).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(count(&c, OpKind::LayerNorm), 0, "two ε");

    // The mean over axis 2 for centering, the variance of that over axis 1.
    let mut n = Net::new();
    let m = n.mean("x", &[2]);
    let d = n.op("Sub", &["x", &m], vec![]);
    let sq = n.op("Mul", &[&d, &d], vec![]);
    let v = n.mean(&sq, &[1]);
    let e = n.f32(&[], &[1e-5]);
    let ve = n.op("Add", &[&v, &e], vec![]);
    let s = n.op("Sqrt", &[&ve], vec![]);
    let y = n.op("Div", &[&d, &s], vec![]);
    let c = convert(&n.model(&y, shape), &Options::default(), |_| {})
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(count(&c, OpKind::LayerNorm), 0, "mixed axes");

    // ε added to the standard deviation, not the variance.
    let mut n = Net::new();
    let m = n.mean("x", &[2]);
    let d = n.op("Sub", &["x", &m], vec![]);
    let sq = n.op("Mul", &[&d, &d], vec![]);
    let v = n.mean(&sq, &[2]);
    let s = n.op("Sqrt", &[&v], vec![]);
    let e = n.f32(&[], &[1e-5]);
    let se = n.op("Add", &[&s, &e], vec![]);
    let y = n.op("Div", &[&d, &se], vec![]);
    let c = convert(&n.model(&y, shape), &Options::default(), |_| {})
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(count(&c, OpKind::LayerNorm), 0, "ε outside the square root");
    // Still computed as written.
    let x: Vec<f32> = (0..80).map(|i| (i % 7) as f32 * 0.3 - 1.0).collect();
    let got = run(&c, &x);
    for r in 0..16 {
        let row = &x[r * 5..r * 5 + 5];
        let mean = row.iter().sum::<f32>() / 5.0;
        let sd = (row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 5.0).sqrt();
        for (j, &v) in row.iter().enumerate() {
            let want = (v - mean) / (sd + 1e-5);
            assert!((got[r * 5 + j] - want).abs() <= 1e-4 * (1.0 + want.abs()));
        }
    }
}

/// A calibrated conversion of a channel-axis LayerNorm runs it as one int8 LayerNorm (the
/// Transposes around it in int8 too), close to the float result.
#[test]
fn channel_layer_norm_is_int8_when_calibrated() {
    let seed = common::seed(29);
    let mut state = seed;
    let (shape, axes): (&[usize], &[usize]) = (&[1, 16, 12], &[1]);
    let gamma: Vec<f32> = (0..16).map(|_| uniform(&mut state, 0.5, 1.5)).collect();
    let beta: Vec<f32> = (0..16).map(|_| uniform(&mut state, -0.5, 0.5)).collect();
    let onnx = layer_norm_net(
        Form::SumsKeepdims0,
        shape,
        axes,
        Some(&gamma),
        Some(&beta),
        1e-5,
        None,
    );
    let sample =
        |state: &mut u64| -> Vec<f32> { (0..192).map(|_| uniform(state, -2.0, 2.0)).collect() };
    let opts = Options {
        calibration: (0..4).map(|_| vec![sample(&mut state)]).collect(),
        ..Options::default()
    };
    let c = convert(&onnx, &opts, |_| {}).unwrap_or_else(|e| panic!("CAIRN_SEED={seed}: {e:#}"));
    assert!(
        c.f32_ops.iter().all(|o| !o.contains("LayerNorm")),
        "CAIRN_SEED={seed}: {:?}",
        c.f32_ops
    );
    assert_eq!(count(&c, OpKind::LayerNorm), 1, "CAIRN_SEED={seed}");
    let x = sample(&mut state);
    let want = reference(&x, shape, axes, Some(&gamma), Some(&beta), 1e-5);
    let got = run(&c, &x);
    let err = got
        .iter()
        .zip(&want)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    assert!(err < 0.1, "CAIRN_SEED={seed}: max error {err}");
}
