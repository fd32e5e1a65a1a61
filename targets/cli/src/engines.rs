//! The engines `cairn bench` compares against cairn, each behind one closure that runs the
//! model on the bench's inputs: ONNX Runtime (fp32, and int8 QDQ/QOperator models when
//! given) and tract (fp32, only in a binary built with the `tract` cargo feature). Each
//! engine gets every graph input by name, converted once (before it is timed) to the
//! element type the model declares. ONNX Runtime runs on the intra-op threads it is given
//! (`cairn bench --threads`), tract on one.

use std::path::Path;

use anyhow::Result;

use crate::bench::Input;

/// Runs the model on the inputs it was loaded with and returns its first output.
pub type RunFn = Box<dyn FnMut() -> Result<Vec<f32>>>;

/// A loaded engine (`cairn bench` names its row).
pub struct Engine {
    pub run: RunFn,
}

/// ONNX Runtime on `threads` intra-op threads. Inputs the model does not have are left
/// out (a QDQ model of the same graph may have lost one); one it has and `inputs` lack is
/// an error.
pub fn ort(path: &Path, inputs: &[Input], threads: usize) -> Result<Engine> {
    let mut m = cairn_ort::OrtModel::load(path, threads.max(1))?;
    let named: Vec<(&str, &[usize], &[f32])> = inputs
        .iter()
        .filter(|i| m.input_names.contains(&i.name))
        .map(|i| (i.name.as_str(), i.shape.as_slice(), i.data.as_slice()))
        .collect();
    let feed = m.feed(&named)?;
    Ok(Engine {
        run: Box::new(move || {
            let mut out = m.run_feed(&feed)?;
            if out.is_empty() {
                anyhow::bail!("ONNX Runtime returned no output");
            }
            Ok(out.swap_remove(0).1)
        }),
    })
}

/// tract (fp32). Compiled in only with the `tract` feature: tract-onnx is a long cold build
/// that `convert`, `run` and the other commands do not need.
#[cfg(feature = "tract")]
pub fn tract(path: &Path, inputs: &[Input]) -> Result<Engine> {
    use anyhow::{anyhow, bail};
    use tract_onnx::prelude::*;

    // Every input's shape is pinned below; the graph's value_info and output shapes may
    // still name symbolic dims (`batch`, `seq`) that tract then cannot unify with them.
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .with_ignore_output_shapes(true)
        .model_for_path(path)?;
    let mut values: TVec<TValue> = tvec![];
    for ix in 0..model.inputs.len() {
        let name = model.node(model.inputs[ix].node).name.clone();
        let x = inputs
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| anyhow!("tract: no value for the model's input '{name}'"))?;
        let s = x.shape.as_slice();
        fn typed<T: Datum + Copy>(s: &[usize], v: Vec<T>) -> Result<(InferenceFact, Tensor)> {
            Ok((T::fact(s).into(), Tensor::from_shape(s, &v)?))
        }
        let d = &x.data;
        let (fact, t) = match x.elem_type {
            1 => typed(s, d.clone())?,
            11 => typed(s, d.iter().map(|&v| v as f64).collect())?,
            7 => typed(s, d.iter().map(|&v| v as i64).collect())?,
            6 => typed(s, d.iter().map(|&v| v as i32).collect())?,
            5 => typed(s, d.iter().map(|&v| v as i16).collect())?,
            3 => typed(s, d.iter().map(|&v| v as i8).collect())?,
            2 => typed(s, d.iter().map(|&v| v as u8).collect())?,
            9 => typed(s, d.iter().map(|&v| v != 0.0).collect())?,
            other => bail!(
                "tract: input '{name}' has element type {}, which bench does not feed",
                crate::samples::elem_type_name(other)
            ),
        };
        model = model.with_input_fact(ix, fact)?;
        values.push(t.into_tvalue());
    }
    let plan = model.into_optimized()?.into_runnable()?;
    Ok(Engine {
        run: Box::new(move || {
            let out = plan.run(values.clone())?;
            let v = out
                .first()
                .ok_or_else(|| anyhow!("tract returned no output"))?;
            let v = v.cast_to::<f32>()?;
            Ok(v.to_plain_array_view::<f32>()?.iter().copied().collect())
        }),
    })
}

/// Without the `tract` feature: an error that says how to get the engine, which `cairn bench`
/// prints as an unavailable engine.
#[cfg(not(feature = "tract"))]
pub fn tract(_path: &Path, _inputs: &[Input]) -> Result<Engine> {
    anyhow::bail!(
        "tract: this cairn binary was built without the `tract` feature; \
         rebuild with `cargo build --release -p cairn-cli --features tract` to compare against tract"
    )
}
