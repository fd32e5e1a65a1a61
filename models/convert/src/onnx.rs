//! Reading ONNX protobuf: the model, its tensors and node attributes.

use anyhow::{anyhow, bail, Context, Result};
use prost::Message;

use crate::onnx_pb as pb;
pub use crate::onnx_pb::{ModelProto, NodeProto, TensorProto};

/// Host-side tensor data (convert time only).
#[derive(Clone, Debug, PartialEq)]
pub enum HData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HData,
}

impl HostTensor {
    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> HostTensor {
        HostTensor {
            shape,
            data: HData::F32(v),
        }
    }
    pub fn i64(shape: Vec<usize>, v: Vec<i64>) -> HostTensor {
        HostTensor {
            shape,
            data: HData::I64(v),
        }
    }
    pub fn len(&self) -> usize {
        match &self.data {
            HData::F32(v) => v.len(),
            HData::I64(v) => v.len(),
            HData::I32(v) => v.len(),
            HData::I8(v) => v.len(),
            HData::U8(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn is_float(&self) -> bool {
        matches!(self.data, HData::F32(_))
    }
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            HData::F32(v) => v.clone(),
            HData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            HData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            HData::I8(v) => v.iter().map(|&x| x as f32).collect(),
            HData::U8(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    pub fn to_i64(&self) -> Vec<i64> {
        match &self.data {
            HData::F32(v) => v.iter().map(|&x| x as i64).collect(),
            HData::I64(v) => v.clone(),
            HData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            HData::I8(v) => v.iter().map(|&x| x as i64).collect(),
            HData::U8(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }
}

pub fn load_model(bytes: &[u8]) -> Result<ModelProto> {
    ModelProto::decode(bytes).context("not a valid ONNX protobuf")
}

/// [`load_model`], then every tensor stored as external data (ONNX's `location`,
/// `offset`, `length`: weights in a file beside the model, as exporters write models
/// over 2 GB and, by default, some smaller ones) read into the tensor from `dir`, the
/// model file's folder. Locations must stay inside `dir`; a file shorter than its
/// tensor's range is an error. Without `dir` such a tensor is an error when read.
pub fn load_model_in(bytes: &[u8], dir: Option<&std::path::Path>) -> Result<ModelProto> {
    let mut m = load_model(bytes)?;
    if let (Some(dir), Some(g)) = (dir, m.graph.as_mut()) {
        let mut files = std::collections::HashMap::new();
        external_in_graph(g, dir, &mut files)?;
    }
    Ok(m)
}

type Files = std::collections::HashMap<String, Vec<u8>>;

fn external_in_graph(
    g: &mut pb::GraphProto,
    dir: &std::path::Path,
    files: &mut Files,
) -> Result<()> {
    for t in &mut g.initializer {
        read_external(t, dir, files)?;
    }
    for n in &mut g.node {
        for a in &mut n.attribute {
            if let Some(t) = a.t.as_mut() {
                read_external(t, dir, files)?;
            }
            for t in &mut a.tensors {
                read_external(t, dir, files)?;
            }
            if let Some(sub) = a.g.as_mut() {
                external_in_graph(sub, dir, files)?;
            }
            for sub in &mut a.graphs {
                external_in_graph(sub, dir, files)?;
            }
        }
    }
    Ok(())
}

fn read_external(t: &mut TensorProto, dir: &std::path::Path, files: &mut Files) -> Result<()> {
    use std::path::Component;
    if t.data_location != pb::tensor_proto::DataLocation::External as i32
        && t.external_data.is_empty()
    {
        return Ok(());
    }
    let key = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.as_str())
    };
    let loc = key("location")
        .ok_or_else(|| anyhow!("tensor '{}': external data without a location", t.name))?;
    let number = |k: &str| -> Result<Option<usize>> {
        key(k)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| anyhow!("tensor '{}': external data {k} '{v}'", t.name))
            })
            .transpose()
    };
    let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
    let rel = std::path::Path::new(loc);
    if !rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!(
            "tensor '{}': external data location '{loc}' is not a path inside the model's folder",
            t.name
        );
    }
    if !files.contains_key(loc) {
        let path = dir.join(rel);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "tensor '{}': reading its external data {}",
                t.name,
                path.display()
            )
        })?;
        files.insert(loc.to_string(), bytes);
    }
    let file = &files[loc];
    let end = match length {
        Some(l) => offset.checked_add(l),
        None => Some(file.len()),
    };
    let range = end
        .filter(|&e| offset <= e && e <= file.len())
        .ok_or_else(|| {
            anyhow!(
                "tensor '{}': external data {offset}+{} past the end of '{loc}' ({} bytes)",
                t.name,
                length.map_or("rest".into(), |l| l.to_string()),
                file.len()
            )
        })?;
    t.raw_data = file[offset..range].to_vec();
    t.external_data.clear();
    t.data_location = pb::tensor_proto::DataLocation::Default as i32;
    Ok(())
}

pub fn load_tensor_file(bytes: &[u8]) -> Result<(String, HostTensor)> {
    let t = TensorProto::decode(bytes).context("not a valid ONNX TensorProto")?;
    Ok((t.name.clone(), tensor_from_proto(&t)?))
}

fn f16_to_f32(h: u16) -> f32 {
    let s = ((h >> 15) & 1) as u32;
    let e = ((h >> 10) & 0x1f) as i32;
    let m = (h & 0x3ff) as u32;
    let v = if e == 0 {
        (m as f32) * 2f32.powi(-24)
    } else if e == 31 {
        if m == 0 {
            f32::INFINITY
        } else {
            f32::NAN
        }
    } else {
        f32::from_bits(((e + 112) as u32) << 23 | m << 13)
    };
    if s == 1 {
        -v
    } else {
        v
    }
}

pub fn tensor_from_proto(t: &TensorProto) -> Result<HostTensor> {
    use pb::tensor_proto::DataType as D;
    if t.data_location == pb::tensor_proto::DataLocation::External as i32
        || !t.external_data.is_empty()
    {
        bail!(
            "tensor '{}' uses external data: convert the model from its file, with the data file beside it",
            t.name
        );
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| anyhow!("tensor '{}' has a negative dim", t.name)))
        .collect::<Result<_>>()?;
    let n = crate::lower_shape::numel(&shape).with_context(|| format!("tensor '{}'", t.name))?;
    let raw = &t.raw_data;
    let dt = D::try_from(t.data_type)
        .map_err(|_| anyhow!("tensor '{}': unknown data type {}", t.name, t.data_type))?;
    let check = |len: usize| -> Result<()> {
        if len != n {
            bail!(
                "tensor '{}' holds {} values for shape {:?}",
                t.name,
                len,
                shape
            )
        }
        Ok(())
    };
    let le = |w: usize| raw.chunks_exact(w);
    let data = match dt {
        D::Float => {
            let v: Vec<f32> = if raw.is_empty() {
                t.float_data.clone()
            } else {
                le(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            };
            check(v.len())?;
            HData::F32(v)
        }
        D::Double => {
            let v: Vec<f32> = if raw.is_empty() {
                t.double_data.iter().map(|&x| x as f32).collect()
            } else {
                le(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect()
            };
            check(v.len())?;
            HData::F32(v)
        }
        D::Float16 => {
            let v: Vec<f32> = if raw.is_empty() {
                t.int32_data.iter().map(|&x| f16_to_f32(x as u16)).collect()
            } else {
                le(2)
                    .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                    .collect()
            };
            check(v.len())?;
            HData::F32(v)
        }
        D::Int8 => {
            let v: Vec<i8> = if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as i8).collect()
            } else {
                raw.iter().map(|&x| x as i8).collect()
            };
            check(v.len())?;
            HData::I8(v)
        }
        D::Uint8 => {
            let v: Vec<u8> = if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as u8).collect()
            } else {
                raw.clone()
            };
            check(v.len())?;
            HData::U8(v)
        }
        D::Int32 => {
            let v: Vec<i32> = if raw.is_empty() {
                t.int32_data.clone()
            } else {
                le(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            };
            check(v.len())?;
            HData::I32(v)
        }
        D::Int64 => {
            let v: Vec<i64> = if raw.is_empty() {
                t.int64_data.clone()
            } else {
                le(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            };
            check(v.len())?;
            HData::I64(v)
        }
        D::Int16 | D::Uint16 | D::Bool => {
            let v: Vec<i64> = if raw.is_empty() {
                t.int32_data.iter().map(|&x| x as i64).collect()
            } else {
                match dt {
                    D::Int16 => le(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                        .collect(),
                    D::Uint16 => le(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                        .collect(),
                    _ => raw.iter().map(|&x| x as i64).collect(),
                }
            };
            check(v.len())?;
            HData::I64(v)
        }
        D::Uint32 | D::Uint64 => {
            let v: Vec<i64> = if raw.is_empty() {
                t.uint64_data.iter().map(|&x| x as i64).collect()
            } else if dt == D::Uint32 {
                le(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect()
            } else {
                le(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as i64)
                    .collect()
            };
            check(v.len())?;
            HData::I64(v)
        }
        other => bail!(
            "tensor '{}' has data type {:?}, which cairn does not support",
            t.name,
            other
        ),
    };
    Ok(HostTensor { shape, data })
}

/// ONNX elem_type of a graph input/output, and its dims (None = dynamic).
pub fn value_info_type(v: &pb::ValueInfoProto) -> (i32, Option<Vec<Option<usize>>>) {
    let Some(pb::type_proto::Value::TensorType(t)) =
        v.r#type.as_ref().and_then(|t| t.value.clone())
    else {
        return (0, None);
    };
    let dims = t.shape.map(|s| {
        s.dim
            .iter()
            .map(|d| match d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
                    Some(v as usize)
                }
                _ => None,
            })
            .collect()
    });
    (t.elem_type, dims)
}

/// Attribute access for one node.
pub struct Attrs<'a>(pub &'a NodeProto);

impl<'a> Attrs<'a> {
    fn get(&self, name: &str) -> Option<&'a pb::AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).map_or(default, |a| a.i)
    }
    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).map_or(default, |a| a.f)
    }
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    pub fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.get(name).map(|a| a.floats.clone())
    }
    pub fn string(&self, name: &str, default: &str) -> String {
        self.get(name).map_or(default.to_string(), |a| {
            String::from_utf8_lossy(&a.s).into_owned()
        })
    }
    pub fn strings(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).map(|a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
    }
    pub fn graph(&self, name: &str) -> Option<&'a pb::GraphProto> {
        self.get(name).and_then(|a| a.g.as_ref())
    }
    pub fn tensor(&self, name: &str) -> Option<&TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }
}
