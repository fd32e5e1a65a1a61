//! Shared helpers of cairn's integration tests: locating the Python venv's ONNX Runtime
//! and ONNX node-test data, and running one ONNX node-test case through the converter
//! and the interpreter.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use cairn_convert::onnx::{load_model, load_tensor_file, HData, HostTensor};
use cairn_convert::{convert, Options};
use cairn_core::emit::AlignedBytes;
use cairn_kernels::host::HostModel;

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub fn zoo() -> PathBuf {
    repo_root().join("models/zoo")
}

/// `onnx/backend/test/data/node` of the onnx wheel in `.venv` (or `CAIRN_ONNX_NODE_DIR`).
pub fn onnx_node_dir() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CAIRN_ONNX_NODE_DIR") {
        return Some(PathBuf::from(p));
    }
    let lib = repo_root().join(".venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages/onnx/backend/test/data/node"))
        .find(|p| p.is_dir())
}

/// ONNX ops cairn lowers (node tests made only of these are expected to pass).
pub const SUPPORTED_OPS: &[&str] = &[
    "LSTM",
    "GRU",
    "RNN",
    "If",
    "Loop",
    "Scan",
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "PRelu",
    "Concat",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Slice",
    "Split",
    "Pad",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Resize",
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Softmax",
    "LayerNormalization",
    "Attention",
    "RotaryEmbedding",
    "Gelu",
    "Erf",
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeLinear",
    "BatchNormalization",
    "Identity",
    "Reciprocal",
    "Log",
    "Sin",
    "Cos",
    "Tan",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Softplus",
    "Elu",
    "Selu",
    "Mish",
    "Softsign",
    "ThresholdedRelu",
    "Celu",
    "Shrink",
    "Acos",
    "Asin",
    "Atan",
    "Sinh",
    "Cosh",
    "Asinh",
    "Acosh",
    "Pow",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Not",
    "Where",
    "Expand",
    "Tile",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
    "ArgMax",
    "ArgMin",
    "TopK",
    "Einsum",
    "GlobalMaxPool",
    "LogSoftmax",
    "Mod",
    "Trilu",
    "DFT",
    "STFT",
    "HannWindow",
    "HammingWindow",
    "BlackmanWindow",
    "MelWeightMatrix",
    "EyeLike",
    "ScatterND",
    "ScatterElements",
    "Scatter",
    "CumSum",
    "OneHot",
    "LRN",
    "RMSNormalization",
    "Compress",
    "Hardmax",
    "LpNormalization",
    "MeanVarianceNormalization",
    "Gather",
    "GatherElements",
    "GatherND",
    "IsNaN",
    "IsInf",
    "DepthToSpace",
    "SpaceToDepth",
    "InstanceNormalization",
    "GroupNormalization",
    "Constant",
    "ConstantOfShape",
    "Shape",
    "Size",
    "Cast",
    "CastLike",
    "Range",
    "Dropout",
    "LpPool",
    "CenterCropPad",
    "Col2Im",
    "GridSample",
    "AffineGrid",
    "Upsample",
    "Sqrt",
    "Exp",
    "Neg",
    "Abs",
];

/// The op types of a node-test case's model.
pub fn case_ops(case: &Path) -> Result<Vec<String>> {
    let m = load_model(&std::fs::read(case.join("model.onnx"))?)?;
    Ok(m.graph
        .map(|g| g.node.iter().map(|n| n.op_type.clone()).collect())
        .unwrap_or_default())
}

/// Relative f32 tolerance of node tests: |a - b| <= REL * |b| + ABS.
pub const REL: f32 = 1e-5;
pub const ABS: f32 = 1e-6;

/// A node-test case on disk: the model bytes, its run-time input names (initializers
/// excluded), the input tensors and the expected outputs of `test_data_set_0`.
pub struct NodeCase {
    pub bytes: Vec<u8>,
    pub in_names: Vec<String>,
    pub inputs: Vec<HostTensor>,
    pub expected: Vec<HostTensor>,
}

pub fn load_node_case(case: &Path) -> Result<NodeCase> {
    let bytes = std::fs::read(case.join("model.onnx"))?;
    let model = load_model(&bytes)?;
    let g = model.graph.as_ref().ok_or_else(|| anyhow!("no graph"))?;
    let inits: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let in_names: Vec<String> = g
        .input
        .iter()
        .filter(|i| !inits.contains(&i.name.as_str()))
        .map(|i| i.name.clone())
        .collect();
    use cairn_convert::onnx_pb::type_proto::Value;
    for v in g.input.iter().chain(&g.output) {
        match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(Value::TensorType(_)) | None => {}
            Some(_) => bail!(
                "'{}' is a sequence, map or optional value; cairn models take tensors",
                v.name
            ),
        }
    }
    let data = case.join("test_data_set_0");
    let read = |name: String| -> Result<HostTensor> {
        let raw = std::fs::read(data.join(&name)).with_context(|| name.clone())?;
        Ok(load_tensor_file(&raw)?.1)
    };
    let inputs = (0..in_names.len())
        .map(|k| read(format!("input_{k}.pb")))
        .collect::<Result<_>>()?;
    let expected = (0..g.output.len())
        .map(|k| read(format!("output_{k}.pb")))
        .collect::<Result<_>>()?;
    Ok(NodeCase {
        bytes,
        in_names,
        inputs,
        expected,
    })
}

/// Run one node-test case. Ok(max relative error) when every output matches.
pub fn run_node_case(case: &Path) -> Result<f32> {
    let NodeCase {
        bytes,
        in_names,
        inputs,
        expected,
    } = load_node_case(case)?;
    // First try: float inputs at run time, integer inputs known at convert time; then
    // every input but the first known at convert time (scales, sizes, bounds...).
    let attempt = |all_const: bool| -> Result<f32> {
        let mut opts = Options {
            float: true,
            ..Default::default()
        };
        let mut runtime = Vec::new();
        for (k, (name, t)) in in_names.iter().zip(&inputs).enumerate() {
            if !t.is_float() || (all_const && k > 0) {
                opts.const_inputs.insert(name.clone(), t.clone());
            } else {
                opts.input_shapes.insert(name.clone(), t.shape.clone());
                runtime.push(t.to_f32());
            }
        }
        let c = convert(&bytes, &opts, |_| {})?;
        let ab = AlignedBytes::from_slice(&c.bytes);
        let mut m = HostModel::new(ab.as_slice()).map_err(|e| anyhow!("load: {e:?}"))?;
        let refs: Vec<&[f32]> = runtime.iter().map(|v| v.as_slice()).collect();
        let outs = m.run(&refs).map_err(|e| anyhow!("run: {e:?}"))?;
        compare(&outs, &expected, &m)
    };
    attempt(false)
        .or_else(|e1| attempt(true).map_err(|e2| anyhow!("{e1:#} / with constant inputs: {e2:#}")))
}

fn compare(outs: &[Vec<f32>], expected: &[HostTensor], m: &HostModel) -> Result<f32> {
    if outs.len() != expected.len() {
        bail!("{} outputs, expected {}", outs.len(), expected.len());
    }
    let infos = m.outputs();
    let mut worst = 0.0f32;
    for (k, (o, e)) in outs.iter().zip(expected).enumerate() {
        if infos[k].shape != e.shape
            && !(infos[k].shape.iter().product::<usize>() == e.len() && e.shape.is_empty())
        {
            bail!(
                "output {k}: shape {:?}, expected {:?}",
                infos[k].shape,
                e.shape
            );
        }
        let exp: Vec<f32> = match &e.data {
            HData::F32(v) => v.clone(),
            // Quantized outputs come back dequantized: dequantize the expectation the same way.
            HData::I8(_) | HData::U8(_) | HData::I32(_) => {
                let t = m
                    .model()
                    .output_tensor(k)
                    .map(|t| m.model().tensor(t).info)
                    .ok_or_else(|| anyhow!("no output"))?;
                let (s, z) = t.quant.per_tensor();
                let scales: Vec<(f32, i32)> = match t.quant {
                    cairn_core::Quant::PerAxis {
                        axis,
                        scales,
                        zero_points,
                    } => {
                        let inner: usize = t.shape.dims()[axis + 1..]
                            .iter()
                            .map(|&d| d as usize)
                            .product();
                        (0..e.len())
                            .map(|i| {
                                let c = (i / inner.max(1)) % scales.len();
                                (scales[c], zero_points[c])
                            })
                            .collect()
                    }
                    _ => vec![(s, z); e.len()],
                };
                e.to_i64()
                    .iter()
                    .zip(&scales)
                    .map(|(&q, &(s, z))| (q as i32 - z) as f32 * s)
                    .collect()
            }
            // Booleans and indices: cairn computes them as i32 (or folds them at convert
            // time); compared exactly.
            HData::I64(v) => {
                if v.iter().any(|&x| x.unsigned_abs() > 1 << 24) {
                    bail!("output {k}: int64 values beyond what cairn's i32/f32 outputs hold");
                }
                v.iter().map(|&x| x as f32).collect()
            }
        };
        if o.len() != exp.len() {
            bail!("output {k}: {} values, expected {}", o.len(), exp.len());
        }
        for (i, (&a, &b)) in o.iter().zip(&exp).enumerate() {
            let ok = (a - b).abs() <= REL * b.abs() + ABS || (a.is_nan() && b.is_nan()) || a == b;
            if !ok {
                bail!("output {k}[{i}] = {a}, expected {b}");
            }
            if b != 0.0 {
                worst = worst.max((a - b).abs() / b.abs());
            }
        }
    }
    Ok(worst)
}

/// Inputs of the PP-OCR classifier's evaluation set, preprocessed as PaddleOCR does.
pub fn cls_eval() -> Result<(Vec<Vec<f32>>, Vec<i64>)> {
    let z = zoo().join("ppocr_cls");
    let u8s = cairn_convert::npy::read(&z.join("eval_u8.npy"))?;
    let w = cairn_convert::npy::read(&z.join("eval_w.npy"))?.data;
    let y: Vec<i64> = cairn_convert::npy::read(&z.join("eval_y.npy"))?
        .data
        .iter()
        .map(|&v| v as i64)
        .collect();
    let per = 3 * 48 * 192;
    let xs = u8s
        .data
        .chunks(per)
        .zip(&w)
        .map(|(r, &wd)| cls_preprocess(r, wd as usize))
        .collect();
    Ok((xs, y))
}

/// PaddleOCR's preprocessing of one text line (pixel values 0–255, CHW, 192 columns):
/// scale to [-1, 1]; columns at or past `width` are zero. The Cortex-M4 image does the same.
pub fn cls_preprocess(pixels: &[f32], width: usize) -> Vec<f32> {
    pixels
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if i % 192 < width {
                (v / 255.0 - 0.5) / 0.5
            } else {
                0.0
            }
        })
        .collect()
}

pub fn rows(a: &cairn_convert::npy::Array) -> Vec<Vec<f32>> {
    let per = a.shape[1..].iter().product::<usize>().max(1);
    a.data.chunks(per).map(|c| c.to_vec()).collect()
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0
}

/// Convert an ONNX file with calibration samples (batch .npy) and optional fixed shape.
pub fn convert_file(
    onnx: &Path,
    calib: Option<&Path>,
    shape: Option<&[usize]>,
) -> Result<cairn_convert::Converted> {
    let bytes = std::fs::read(onnx)?;
    let mut o = Options::default();
    if let Some(s) = shape {
        o.input_shapes.insert("#0".into(), s.to_vec());
    }
    if let Some(c) = calib {
        o.calibration = rows(&cairn_convert::npy::read(c)?)
            .into_iter()
            .map(|r| vec![r])
            .collect();
    }
    convert(&bytes, &o, |_| {})
}

/// Int8 run of a node-test case: calibrate on the case's own inputs (every input but the
/// first known at convert time), run, and return (int8 ops, max error / output range).
/// `Ok(None)` when nothing in the case ran in int8.
pub fn run_node_case_int8(case: &Path) -> Result<Option<(usize, f32)>> {
    let NodeCase {
        bytes,
        in_names,
        inputs,
        expected,
    } = load_node_case(case)?;
    let mut opts = Options::default();
    let mut runtime = Vec::new();
    for (k, (name, t)) in in_names.iter().zip(inputs).enumerate() {
        if !t.is_float() || k > 0 {
            opts.const_inputs.insert(name.clone(), t);
        } else {
            opts.input_shapes.insert(name.clone(), t.shape.clone());
            runtime.push(t.to_f32());
        }
    }
    if runtime.len() != 1 {
        return Ok(None);
    }
    let Some(HData::F32(exp)) = expected.into_iter().next().map(|t| t.data) else {
        return Ok(None);
    };
    opts.calibration = vec![runtime.clone()];
    let c = convert(&bytes, &opts, |_| {})?;
    if c.int8_ops == 0 {
        return Ok(None);
    }
    let ab = AlignedBytes::from_slice(&c.bytes);
    let mut m = HostModel::new(ab.as_slice()).map_err(|e| anyhow!("load: {e:?}"))?;
    let out = m.run(&[&runtime[0]]).map_err(|e| anyhow!("run: {e:?}"))?;
    let lo = exp.iter().copied().fold(f32::INFINITY, f32::min).min(0.0);
    let hi = exp
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
        .max(0.0);
    let range = (hi - lo).max(1e-6);
    let err = out[0]
        .iter()
        .zip(&exp)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    Ok(Some((c.int8_ops, err / range)))
}

/// SplitMix64: the small seeded generator of the randomised tests.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The seed of a randomised test: `CAIRN_SEED` when set, else `default`.
pub fn seed_or(default: u64) -> u64 {
    std::env::var("CAIRN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
