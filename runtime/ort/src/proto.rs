//! A small protobuf writer for the subset of `onnx.proto` the exporter emits: a model,
//! its graph, nodes with int/float/ints/string attributes, initializers (raw data) and typed
//! inputs/outputs. Field numbers are onnx.proto's (ONNX 1.x, unchanged since IR v3).
//!
//! Hand-written so that the ONNX Runtime backend needs no protobuf code generator and no
//! dependency on the converter; writing is all it does (nothing here parses).

/// ONNX `TensorProto.DataType` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    Float = 1,
    Uint8 = 2,
    Int8 = 3,
    Int32 = 6,
    Int64 = 7,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn int(out: &mut Vec<u8>, field: u32, v: i64) {
    key(out, field, 0);
    varint(out, v as u64);
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn f32_field(out: &mut Vec<u8>, field: u32, v: f32) {
    key(out, field, 5);
    out.extend_from_slice(&v.to_le_bytes());
}

fn packed_i64(out: &mut Vec<u8>, field: u32, vs: &[i64]) {
    let mut body = Vec::new();
    for &v in vs {
        varint(&mut body, v as u64);
    }
    bytes(out, field, &body);
}

/// A node attribute.
#[derive(Clone, Debug)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Str(&'static str),
}

/// One `NodeProto`.
#[derive(Clone, Debug)]
pub struct Node {
    pub op_type: &'static str,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: Vec<(&'static str, Attr)>,
}

/// One initializer (`TensorProto` with raw little-endian data).
#[derive(Clone, Debug)]
pub struct Init {
    pub name: String,
    pub elem: ElemType,
    pub dims: Vec<i64>,
    pub raw: Vec<u8>,
}

/// A graph input or output (`ValueInfoProto` with a tensor type of fixed shape).
#[derive(Clone, Debug)]
pub struct ValueInfo {
    pub name: String,
    pub elem: ElemType,
    pub dims: Vec<i64>,
}

/// A whole model: one graph, default domain at `opset`.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub inits: Vec<Init>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

fn node(n: &Node, index: usize) -> Vec<u8> {
    let mut o = Vec::new();
    for i in &n.inputs {
        bytes(&mut o, 1, i.as_bytes());
    }
    for i in &n.outputs {
        bytes(&mut o, 2, i.as_bytes());
    }
    bytes(&mut o, 3, format!("n{index}_{}", n.op_type).as_bytes());
    bytes(&mut o, 4, n.op_type.as_bytes());
    for (name, a) in &n.attrs {
        let mut b = Vec::new();
        bytes(&mut b, 1, name.as_bytes());
        match a {
            Attr::Float(v) => {
                f32_field(&mut b, 2, *v);
                int(&mut b, 20, 1);
            }
            Attr::Int(v) => {
                int(&mut b, 3, *v);
                int(&mut b, 20, 2);
            }
            Attr::Ints(vs) => {
                packed_i64(&mut b, 8, vs);
                int(&mut b, 20, 7);
            }
            Attr::Str(v) => {
                bytes(&mut b, 4, v.as_bytes());
                int(&mut b, 20, 3);
            }
        }
        bytes(&mut o, 5, &b);
    }
    o
}

fn init(t: &Init) -> Vec<u8> {
    let mut o = Vec::new();
    packed_i64(&mut o, 1, &t.dims);
    int(&mut o, 2, t.elem as i64);
    bytes(&mut o, 8, t.name.as_bytes());
    bytes(&mut o, 9, &t.raw);
    o
}

fn value_info(v: &ValueInfo) -> Vec<u8> {
    let mut shape = Vec::new();
    for &d in &v.dims {
        let mut dim = Vec::new();
        int(&mut dim, 1, d);
        bytes(&mut shape, 1, &dim);
    }
    let mut tensor = Vec::new();
    int(&mut tensor, 1, v.elem as i64);
    bytes(&mut tensor, 2, &shape);
    let mut ty = Vec::new();
    bytes(&mut ty, 1, &tensor);
    let mut o = Vec::new();
    bytes(&mut o, 1, v.name.as_bytes());
    bytes(&mut o, 2, &ty);
    o
}

/// IR version written (ONNX 1.10+ readers take it).
pub const IR_VERSION: i64 = 8;

impl Graph {
    /// The serialized `ModelProto`.
    pub fn to_model_bytes(&self, opset: i64) -> Vec<u8> {
        let mut g = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            bytes(&mut g, 1, &node(n, i));
        }
        bytes(&mut g, 2, b"cairn_segment");
        for t in &self.inits {
            bytes(&mut g, 5, &init(t));
        }
        for v in &self.inputs {
            bytes(&mut g, 11, &value_info(v));
        }
        for v in &self.outputs {
            bytes(&mut g, 12, &value_info(v));
        }
        let mut m = Vec::new();
        int(&mut m, 1, IR_VERSION);
        bytes(&mut m, 2, b"cairn");
        bytes(&mut m, 3, env!("CARGO_PKG_VERSION").as_bytes());
        bytes(&mut m, 7, &g);
        let mut op = Vec::new();
        bytes(&mut op, 1, b"");
        int(&mut op, 2, opset);
        bytes(&mut m, 8, &op);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_protobuf() {
        let mut o = Vec::new();
        varint(&mut o, 300);
        assert_eq!(o, [0xAC, 0x02]);
        let mut o = Vec::new();
        int(&mut o, 2, -1);
        // Negative int64 is ten bytes in protobuf's varint.
        assert_eq!(o.len(), 11);
    }
}
