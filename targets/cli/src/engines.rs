//! The engines `cairn bench` compares against cairn, each behind one closure that runs the
//! model on an f32 input: ONNX Runtime (fp32, and int8 QDQ/QOperator models when given) and
//! tract (fp32, only in a binary built with the `tract` cargo feature). ONNX Runtime runs on
//! the intra-op threads it is given (`cairn bench --threads`), tract on one.

use std::path::Path;

use anyhow::Result;

/// Runs a model on one f32 input and returns its first output.
pub type RunFn = Box<dyn FnMut(&[f32]) -> Result<Vec<f32>>>;

/// A loaded engine.
pub struct Engine {
    pub name: String,
    pub run: RunFn,
}

/// ONNX Runtime on `threads` intra-op threads.
pub fn ort(name: &str, path: &Path, shape: &[usize], threads: usize) -> Result<Engine> {
    let mut m = cairn_ort::OrtModel::load(path, threads.max(1))?;
    let shape = shape.to_vec();
    Ok(Engine {
        name: name.into(),
        run: Box::new(move |x| {
            let mut out = m.run(&[(shape.clone(), x.to_vec())])?;
            Ok(out.swap_remove(0).1)
        }),
    })
}

/// tract (fp32). Compiled in only with the `tract` feature: tract-onnx is a long cold build
/// that `convert`, `run` and the other commands do not need.
#[cfg(feature = "tract")]
pub fn tract(path: &Path, shape: &[usize]) -> Result<Engine> {
    use anyhow::anyhow;
    use tract_onnx::prelude::*;

    let plan = tract_onnx::onnx()
        .model_for_path(path)?
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let shape = shape.to_vec();
    Ok(Engine {
        name: "tract-fp32".into(),
        run: Box::new(move |x| {
            let t = Tensor::from_shape(&shape, x)?;
            let out = plan.run(tvec!(t.into_tvalue()))?;
            let v = out
                .first()
                .ok_or_else(|| anyhow!("tract returned no output"))?;
            Ok(v.to_plain_array_view::<f32>()?.iter().copied().collect())
        }),
    })
}

/// Without the `tract` feature: an error that says how to get the engine, which `cairn bench`
/// prints as an unavailable engine.
#[cfg(not(feature = "tract"))]
pub fn tract(_path: &Path, _shape: &[usize]) -> Result<Engine> {
    anyhow::bail!(
        "tract: this cairn binary was built without the `tract` feature; \
         rebuild with `cargo build --release -p cairn-cli --features tract` to compare against tract"
    )
}
