//! cairn-convert: ONNX → `.cairn`, on the host only (never linked into a device).
//!
//! Pipeline: read the protobuf → lower to cairn ops with static shapes (folding constant
//! subgraphs) → fuse (BatchNorm into conv, activations into producers, HardSwish) →
//! quantize (the model's own QDQ params where present, else calibration samples) →
//! plan the arena and emit with `cairn_core::emit`.

pub mod calibrate;
mod cell_state;
pub mod elementwise;
pub mod fold_tables;
pub mod fuse;
mod fuse_norm;
mod fuse_transpose;
pub mod ir;
pub mod lower;
mod lower_attention;
mod lower_col2im;
mod lower_crop;
mod lower_einsum;
mod lower_grid_sample;
mod lower_index;
mod lower_loop;
mod lower_math;
mod lower_ml;
mod lower_nn;
mod lower_norm;
mod lower_pool;
mod lower_qop;
mod lower_reduce;
mod lower_resize;
mod lower_rnn;
mod lower_shape;
mod lower_signal;
pub mod npy;
pub mod onnx;
pub mod onnx_pb;
pub mod quantize;
pub mod refine;
mod round_trips;
pub mod run_time_int8;
pub mod sensitive;
pub mod smooth;

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context, Result};
use cairn_core::OpKind;

pub use calibrate::Method;
pub use ir::Graph;
pub use onnx::HostTensor;

#[derive(Clone, Debug)]
pub struct Options {
    /// Fixed shapes for inputs with dynamic dims, by name or position ("#0").
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// Graph inputs known at convert time.
    pub const_inputs: HashMap<String, HostTensor>,
    /// Calibration samples: one Vec per sample, one f32 array per graph input.
    pub calibration: Vec<Vec<Vec<f32>>>,
    pub method: Method,
    /// Keep everything in f32 even when QDQ params or samples are present.
    pub float: bool,
    /// Intermediate ONNX values to expose as extra outputs (e.g. embeddings).
    pub extra_outputs: Vec<String>,
    /// Pre-pack one-group int8 Conv weights for the host GEMM micro-kernels
    /// (`ModelBuilder::pack_conv_weights`): faster on x86_64/aarch64, two bytes of flash
    /// per packed weight instead of one.
    pub pack_weights: bool,
    /// When calibrating, every conversion runs the cheap default passes
    /// (`sensitive::default_passes`: ranges narrowed to the clamps that read them, f32
    /// islands where int8 input ruins an op's result, the decision layer in f32), with this
    /// bound or [`SUGGESTED_INT8_ERROR_LIMIT`]. With a bound set, also: tensors whose int8
    /// form would lose more than it (`calibrate::tensor_errors`) stay f32, and so do the
    /// ops touching them; then ops whose int8 form adds more than the bound while an
    /// output is off by more than it (`refine`), with no cap on the MACs moved. `None` (the
    /// default) skips the first and leaves the second to `int8_output_guard`: a tight
    /// bound costs conversion time (minutes on a 600 MMAC detector) and speed where it
    /// moves ops to f32, so it is asked for.
    pub int8_error_limit: Option<f32>,
    /// With no `int8_error_limit`, a calibrated conversion still checks its outputs: when
    /// an output of the int8 graph is off from the float graph by more than this relative
    /// L2 error on the calibration samples, the refinement (`refine`) moves to f32 the
    /// first ops whose int8 form adds more than [`INT8_GUARD_LIMIT`], holding at most
    /// [`INT8_GUARD_MAC_SHARE`] of the model's MACs, until every output is within that.
    /// Where that share is not enough (an output still over [`INT8_GUARD_LIMIT`]), the
    /// conversion applies [`SUGGESTED_INT8_ERROR_LIMIT`] as if it were given, and keeps the
    /// result when its outputs are closer. A model whose outputs are already within the
    /// trigger converts as without the guard.
    /// `None` turns it off. Default: [`DEFAULT_INT8_OUTPUT_GUARD`].
    pub int8_output_guard: Option<f32>,
    /// Bits of the weights a calibrated conversion quantizes in one-group Convs (a QDQ
    /// model's weights are kept as given; other weighted ops keep 8). [`WeightBits`].
    pub weight_bits: WeightBits,
    /// Before calibration, move per-channel scales from activations into the weights that
    /// read them where that commutes (`smooth`: SmoothQuant's LayerNorm → linear
    /// migration, cross-layer equalization through Relu, PRelu, data movement and a
    /// spectrum's square and square root), each migration kept only when it brings its
    /// layer's int8 result closer to float on calibration samples. Off by default: on the
    /// corpus it raised the openWakeWord mel model (cosine 0.950 → 0.965) and lowered
    /// Silero VAD (frames 0.957 → 0.92). Never applied to a QDQ model.
    pub smooth: bool,
    /// The folder of the model file: where tensors stored as ONNX external data are read
    /// from (`onnx::load_model_in`). `None`: such a tensor is an error.
    pub external_data_dir: Option<std::path::PathBuf>,
    /// Unroll every LSTM, GRU and RNN into per-step ops instead of one `Recurrent` op per
    /// direction (`lower::LowerOptions::fused_recurrent` says which the default fuses).
    pub unroll_recurrent: bool,
}

/// The bound `--int8-error-limit` suggests: 5% relative L2 error. Compact activations
/// (conv and attention blocks after normalization) lose 0.5–2% in int8; a raw waveform or
/// a power spectrum loses 5–30% and wrecks everything after it.
pub const SUGGESTED_INT8_ERROR_LIMIT: f32 = 0.05;

/// The output error a default calibrated conversion tolerates before it moves ops to
/// f32 (`Options::int8_output_guard`): 35% relative L2 error on the calibration samples.
/// On the corpus, int8 outputs whose task metric holds are 5–32% off (a text
/// recognizer's logits 22–32%, a detector's 9–27%); those it broke are 40–80% off (a
/// detector whose early layers carry channels of very different ranges: boxes F1 0.61)
/// or 48% (a sentence encoder: cosine 0.91). Once over it, ops move until every output
/// is within [`INT8_GUARD_LIMIT`].
pub const DEFAULT_INT8_OUTPUT_GUARD: f32 = 0.35;

/// The bound the output guard refines to once triggered: ops whose int8 form adds more
/// than 15% go to f32 until every output is within 15%. At 20%, basic-pitch's note model
/// stopped at 19.5% with its note F1 at 0.955 (bar 0.98); at 15% the guard hands over to
/// [`SUGGESTED_INT8_ERROR_LIMIT`] there (F1 0.994), and MiniLM moves 7 more ops (cosine
/// 0.993 → 0.995); every other corpus model converts as at 20%.
pub const INT8_GUARD_LIMIT: f32 = 0.15;

/// The most of a model's multiply-accumulates the default output guard moves to f32 by
/// itself (past it, the conversion hands over to [`SUGGESTED_INT8_ERROR_LIMIT`]).
pub const INT8_GUARD_MAC_SHARE: f32 = 0.25;

/// Bits of a calibrated conversion's one-group Conv weights. 7 keeps them in [−63, 63],
/// where x86_64 hosts without VNNI multiply u8×s8 exactly (`vpmaddubsw`: 1.2–1.4× the
/// int16 pairs per conv); CPUs with VNNI, AMX, the Armv8.2 dot product or a Cortex-M's
/// SMLAD run both at one speed, so there 7 bits only costs accuracy. 8 uses [−127, 127].
/// The default is [`WeightBits::Auto`]: on the corpus it took 7 bits in all one-group
/// convs of 7 models, in some of 4 and in none of 2, every task metric within its bar
/// (`models/corpus/bench.py --convert-args "--weight-bits auto"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightBits {
    Seven,
    Eight,
    /// 7 bits where the calibration samples say it costs nothing that matters: all
    /// layers at 7 when the worst output error grows by at most [`AUTO_SEVEN_GROWTH`];
    /// else the layers whose weights lose most from the eighth bit keep it
    /// (`quantize::seven_bit_weight_errors`), at up to two tighter cuts; else 8.
    Auto,
}

/// `--weight-bits auto` keeps 7 bits when the worst relative output error on the
/// calibration samples (`refine::output_errors`) is at most this factor of the 8-bit
/// one, or half a point above it, whichever is more.
pub const AUTO_SEVEN_GROWTH: f32 = 1.05;

impl Default for Options {
    fn default() -> Self {
        Options {
            input_shapes: HashMap::new(),
            const_inputs: HashMap::new(),
            calibration: vec![],
            method: Method::MinMax,
            float: false,
            extra_outputs: vec![],
            pack_weights: false,
            int8_error_limit: None,
            int8_output_guard: Some(DEFAULT_INT8_OUTPUT_GUARD),
            weight_bits: WeightBits::Auto,
            smooth: false,
            external_data_dir: None,
            unroll_recurrent: false,
        }
    }
}

pub struct Converted {
    pub bytes: Vec<u8>,
    /// The float graph after fusion (the reference the int8 model approximates).
    pub float_graph: Graph,
    /// How the model was quantized: "qdq", "calibrated", "dynamic" (int8 weights given by
    /// the model, rows quantized at run time: `run_time_int8`) or "float".
    pub mode: &'static str,
    pub int8_ops: usize,
    /// Ops left in f32 (name and kind), when quantizing.
    pub f32_ops: Vec<String>,
    pub notes: Vec<String>,
}

/// Lower and fuse an ONNX model into cairn's float graph.
impl Options {
    fn lowering(&self) -> lower::LowerOptions {
        lower::LowerOptions {
            input_shapes: self.input_shapes.clone(),
            const_inputs: self.const_inputs.clone(),
            extra_outputs: self.extra_outputs.clone(),
            clamp_fake_quant: self.float,
            recurrent_max_hidden: if self.unroll_recurrent {
                0
            } else {
                lower::LowerOptions::fused_recurrent(!self.float && !self.calibration.is_empty())
            },
        }
    }
}

/// Every node of an ONNX model that cairn cannot convert yet, with the reason, found in
/// one pass before any conversion work (`cairn check`).
pub fn check(onnx_bytes: &[u8], opts: &Options) -> Result<lower::CheckReport> {
    let model = onnx::load_model_in(onnx_bytes, opts.external_data_dir.as_deref())?;
    lower::check(&model, &opts.lowering())
}

pub fn float_graph(onnx_bytes: &[u8], opts: &Options) -> Result<(Graph, Vec<String>)> {
    let model = onnx::load_model_in(onnx_bytes, opts.external_data_dir.as_deref())?;
    let (mut g, mut notes) = lower::lower(&model, &opts.lowering())?;
    let fused = fuse::fuse(&mut g);
    if fused > 0 {
        notes.push(format!(
            "{fused} fusions (BatchNorm folds, activations, HardSwish, LayerNorm, GELU/SiLU/Mish written out)"
        ));
    }
    Ok((g, notes))
}

/// Whether a graph's ops and tensors fit the bounds of a `.cairn` file; the error says by
/// how much and what to try.
fn fits_a_file(g: &Graph) -> Result<()> {
    let (n_ops, n_tensors) = (g.ops.len(), g.tensors.len());
    let (max_ops, max_tensors) = (cairn_core::model::MAX_OPS, cairn_core::model::MAX_TENSORS);
    if n_ops > max_ops || n_tensors > max_tensors {
        bail!(
            "the model lowers to {n_ops} ops and {n_tensors} tensors; a .cairn file holds at most \
             {max_ops} ops and {max_tensors} tensors (recurrent layers are unrolled over their \
             sequence: a shorter one through --input-shape, or --float, which adds no \
             quantize ops, may fit)"
        );
    }
    Ok(())
}

pub fn convert(
    onnx_bytes: &[u8],
    opts: &Options,
    progress: impl FnMut(usize),
) -> Result<Converted> {
    let (mut g, mut notes) = float_graph(onnx_bytes, opts)?;
    // Quantizing adds ops (quantize and dequantize steps) far more than folding element-wise
    // chains into tables removes: a float graph past the bounds is refused before the
    // calibration runs (minutes on a long recurrence), not after. (`fuse` pruned it.)
    fits_a_file(&g)?;
    // Activation params make a QDQ model; weights given quantized alone (a dynamically
    // quantized model) leave the activations to calibration.
    let has_qdq = g
        .tensors
        .iter()
        .any(|t| matches!(t.hint, Some(ir::Hint::Act { .. })));
    if has_qdq && !opts.float && !opts.calibration.is_empty() {
        notes.push("the model carries its own quantization (QDQ params): it is converted with them, and the --calibrate samples are not used (--float for f32)".into());
    }
    if opts.smooth && !opts.float && !has_qdq && !opts.calibration.is_empty() {
        let n = smooth::smooth(&mut g, &opts.calibration).context("channel scale migration")?;
        if n > 0 {
            notes.push(format!(
                "{n} per-channel scale migrations (cross-layer equalization, SmoothQuant) before calibration"
            ));
        }
    }
    let (mut out, mode, int8_ops, f32_ops) = if opts.float
        || (!has_qdq && opts.calibration.is_empty())
    {
        let mut f = g.clone();
        let w8 = if opts.float {
            0
        } else {
            run_time_int8::keep_int8_weights(&mut f)
        };
        if w8 > 0 {
            notes.push(format!("{w8} FullyConnected ops run on the model's own int8 weights, their input rows quantized at run time (dynamic quantization); the rest stays f32 (pass --calibrate DIR for static int8 throughout, --float for f32 weights)"));
            let tables = run_time_int8::keep_int8_tables(&mut f);
            if tables > 0 {
                notes.push(format!("{tables} embedding tables stored as int8 and gathered as bytes, then scaled (the same values)"));
            }
            (f, "dynamic", w8, vec![])
        } else {
            if !opts.float {
                notes.push("no QDQ params and no calibration samples: the model stays f32 (pass --calibrate DIR for int8)".into());
            }
            (f, "float", 0, vec![])
        }
    } else {
        let ranges = if has_qdq {
            quantize::Ranges::new()
        } else {
            let mut r = calibrate::calibrate(&g, &opts.calibration, opts.method, progress)
                .context("calibration")?;
            let ruined = sensitive::default_passes(
                &g,
                &opts.calibration,
                &mut r,
                opts.int8_error_limit.unwrap_or(SUGGESTED_INT8_ERROR_LIMIT),
                &mut notes,
            )?;
            // An explicit bound: lossy tensors and every op over it, at any cost. The
            // default guard: only when an output is off by more than it, within a share
            // of the MACs; when that share cannot bring the outputs back within the
            // trigger, the explicit bound's treatment at the suggested bound (a fast answer
            // that is wrong is worth less than a slower right one).
            match (opts.int8_error_limit, opts.int8_output_guard) {
                (Some(limit), _) => {
                    let done = bounded(&g, &opts.calibration, &mut r, limit, &mut notes)?;
                    note_moved(&mut notes, &done.moved, limit, "");
                }
                (None, Some(guard)) => {
                    let limit = INT8_GUARD_LIMIT.min(guard);
                    let before = r.clone();
                    let done = refine::refine(
                        &g,
                        &opts.calibration,
                        &mut r,
                        limit,
                        guard,
                        Some(INT8_GUARD_MAC_SHARE),
                    )
                    .context("int8 accuracy refinement")?;
                    // Triggered and still short of its own bound when the MACs ran out,
                    // or over the trigger whatever it did, or an op's result left ruined
                    // by producers too costly for an island (whatever the output error
                    // says: a log-spectrum's quiet bins): try the explicit bound.
                    let short = !done.moved.is_empty() && done.off > limit;
                    let bound = SUGGESTED_INT8_ERROR_LIMIT;
                    let by_guard = short || done.off > guard;
                    let handed_over = if by_guard || !ruined.is_empty() {
                        let (mut wide, mut wide_notes) = (before, Vec::new());
                        let wider =
                            bounded(&g, &opts.calibration, &mut wide, bound, &mut wide_notes)?;
                        (wider.off < done.off).then_some((wide, wide_notes, wider))
                    } else {
                        None
                    };
                    match handed_over {
                        Some((wide, wide_notes, wider)) => {
                            let why = match ruined.first().filter(|_| !by_guard) {
                                Some((op, e)) => format!(
                                    "'{op}' stays {:.0}% off with int8 producers (an f32 island of the cheap ops before it cannot fix it: its input's small values are gone earlier; the output is {:.0}% off)",
                                    100.0 * e,
                                    100.0 * done.off,
                                ),
                                None => format!(
                                    "the output guard's share of the MACs ({:.0}%) left an output {:.0}% off on the calibration samples (its bound: {:.0}%)",
                                    100.0 * INT8_GUARD_MAC_SHARE,
                                    100.0 * done.off,
                                    100.0 * limit,
                                ),
                            };
                            notes.push(format!(
                                "{why}, so the conversion keeps in f32 what --int8-error-limit {:.0} would (output error now {:.0}%; slower; --int8-error-limit 0 keeps every op that can be int8)",
                                100.0 * bound,
                                100.0 * wider.off,
                            ));
                            notes.extend(wide_notes);
                            note_moved(&mut notes, &wider.moved, bound, "");
                            r = wide;
                        }
                        None => {
                            note_moved(&mut notes, &done.moved, limit, GUARD_NOTE);
                            if done.moved.is_empty() && done.off > limit {
                                // Under the trigger, so nothing moved, but over the bound
                                // a user may need: say how far off, and the knob.
                                notes.push(format!(
                                    "int8 outputs are {:.0}% off on the calibration samples (relative L2 error; the output guard acts over {:.0}%): a classifier's top-1 bears that, an embedding or a regression may not; --int8-error-limit {:.0} moves the ops that add most to f32",
                                    100.0 * done.off,
                                    100.0 * guard,
                                    100.0 * limit,
                                ));
                            }
                        }
                    }
                }
                (None, None) => {}
            }
            r
        };
        let ships_int8 = g.int8_weights
            || g.tensors
                .iter()
                .any(|t| matches!(t.hint, Some(ir::Hint::Weight { .. })));
        if !has_qdq && ships_int8 {
            // A model that ships int8 weights may do better as it was made: say so.
            let w8 = run_time_int8::int8_weight_ops(&g);
            if w8 > 0 {
                notes.push(format!("this model ships int8 weights: without --calibrate, {w8} FullyConnected ops would keep them and quantize their input rows at run time (mode dynamic, as the model was made); compare both on your data"));
            }
        }
        let quantized = |bits: u8, keep8: &HashSet<usize>| -> Result<_> {
            let (mut q, mut rep) = quantize::quantize_bits_keeping(&g, &ranges, bits, keep8)?;
            let mut note = None;
            if fits_a_file(&q).is_err() {
                if let Some((q2, rep2, n)) = unrolled_in_f32(&g, &ranges, bits, keep8, &q)? {
                    note = Some(n);
                    (q, rep) = (q2, rep2);
                }
            }
            Ok((q, rep, note))
        };
        let none = HashSet::new();
        let (mut q, mut rep, mut unrolled_note) = match opts.weight_bits {
            WeightBits::Seven => quantized(7, &none)?,
            WeightBits::Eight | WeightBits::Auto => quantized(8, &none)?,
        };
        let mut bits_note = match opts.weight_bits {
            WeightBits::Seven => "one-group conv weights quantized to 7 bits".to_string(),
            _ => "one-group conv weights quantized to 8 bits".to_string(),
        };
        if opts.weight_bits == WeightBits::Auto && !has_qdq && !opts.calibration.is_empty() {
            let convs = quantize::seven_bit_weight_errors(&g);
            if !convs.is_empty() {
                match auto_seven(&g, (&q, &rep.values), &opts.calibration, convs, &quantized)? {
                    Some((seven, note)) => {
                        (q, rep, unrolled_note) = seven;
                        bits_note = note;
                    }
                    None => bits_note.push_str(" (--weight-bits auto: 7 bits cost accuracy here)"),
                }
            }
        }
        notes.extend(unrolled_note);
        if !has_qdq && ships_int8 {
            let bound = opts.int8_error_limit.unwrap_or(INT8_GUARD_LIMIT);
            let (kept, note) = run_time_int8::int8_weights_where_f32(
                &g,
                q,
                &rep.values,
                &opts.calibration,
                bound,
            )?;
            q = kept;
            notes.extend(note);
        } else if !has_qdq {
            let (kept, note) =
                run_time_int8::rounded_weights_where_f32(&g, q, &rep.values, &opts.calibration)?;
            q = kept;
            notes.extend(note);
        }
        let folded = fold_tables::fold(&mut q).context("folding int8 element-wise chains")?;
        if folded > 0 {
            notes.push(format!(
                "{folded} int8 element-wise ops folded into lookup tables (same bytes)"
            ));
        }
        if !has_qdq {
            // The .cairn format has no metadata section: the note says it, and the kernels
            // check the weights' range when they pack them.
            notes.push(bits_note);
        }
        (
            q,
            if has_qdq { "qdq" } else { "calibrated" },
            rep.int8_ops - folded.min(rep.int8_ops),
            rep.f32_ops,
        )
    };
    materialize_outputs(&mut out);
    let shared = out.share_constants();
    if shared > 0 {
        notes.push(format!(
            "{shared} constant tensors were copies of others (the same dtype, shape, quantization and bytes) and are stored once"
        ));
    }
    fits_a_file(&out)?;
    let mut builder = out.to_builder()?;
    if opts.pack_weights {
        let n = builder.pack_conv_weights(cairn_core::layout::PAIRS6_MAX_K);
        notes.push(format!(
            "{n} conv weight tensors pre-packed (layout pairs6)"
        ));
    }
    let bytes = builder
        .finish()
        .map_err(|e| anyhow::anyhow!("building the .cairn file: {e}"))?;
    Ok(Converted {
        bytes,
        float_graph: g,
        mode,
        int8_ops,
        f32_ops,
        notes,
    })
}

/// One quantization of the calibrated graph: the int8 graph, its report, and the note
/// of the unrolled fallback when it took it.
type Quantized = (Graph, quantize::Report, Option<String>);

/// `--weight-bits auto`: the 7-bit quantization (from `quantized(7, keep8)`) that keeps
/// the worst output error on `samples` within [`AUTO_SEVEN_GROWTH`] of the 8-bit graph
/// `q8`'s, and its note. `convs` are `quantize::seven_bit_weight_errors(g)`. Tried: every
/// such Conv at 7 bits; then the quarter of them whose weights lose most from the eighth
/// bit kept at 8; then the half. `None` when no try is within the bound.
fn auto_seven(
    g: &Graph,
    q8: (&Graph, &HashMap<usize, usize>),
    samples: &[Vec<Vec<f32>>],
    mut convs: Vec<(usize, f32)>,
    quantized: &dyn Fn(u8, &HashSet<usize>) -> Result<Quantized>,
) -> Result<Option<(Quantized, String)>> {
    // Most damaged first.
    convs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut before = None;
    for keep in [0, convs.len().div_ceil(4), convs.len().div_ceil(2)] {
        let keep8: HashSet<usize> = convs[..keep].iter().map(|c| c.0).collect();
        let seven = quantized(7, &keep8)?;
        let errs = if let Some(b) = before {
            vec![
                b,
                refine::output_errors(g, &[(&seven.0, &seven.1.values)], samples)?[0],
            ]
        } else {
            refine::output_errors(g, &[q8, (&seven.0, &seven.1.values)], samples)?
        };
        before = Some(errs[0]);
        let (e8, e7) = (errs[0], errs[1]);
        if e7 <= (e8 * AUTO_SEVEN_GROWTH).max(e8 + 0.005) {
            let n = convs.len() - keep;
            let note = format!(
                "one-group conv weights quantized to 7 bits in {n} of {} convs (--weight-bits auto; {keep} keep 8): output error on the calibration samples {:.1}% (8 bits: {:.1}%)",
                convs.len(),
                100.0 * e7,
                100.0 * e8
            );
            return Ok(Some((seven, note)));
        }
    }
    Ok(None)
}

/// When the int8 graph `q` is over a file's bounds (the quantize and dequantize steps
/// around the f32 islands of an unrolled recurrence can add a third to its ops), the
/// quantization again with the unrolled nodes left f32 (`quantize::unrolled_in_f32`). The
/// graph and a note when that fits; `None` when there is no such node or it still does not
/// fit (the caller's bound check then says so).
fn unrolled_in_f32(
    g: &Graph,
    ranges: &quantize::Ranges,
    weight_bits: u8,
    keep8: &HashSet<usize>,
    q: &Graph,
) -> Result<Option<(Graph, quantize::Report, String)>> {
    let Some((q2, rep2, names)) = quantize::unrolled_in_f32(g, ranges, weight_bits, keep8)? else {
        return Ok(None);
    };
    if fits_a_file(&q2).is_err() {
        return Ok(None);
    }
    let note = format!(
        "the int8 graph has {} ops, over the {} a .cairn file holds, so the {} unrolled recurrent or loop nodes ({}) stay f32 inside: {} ops",
        q.ops.len(),
        cairn_core::model::MAX_OPS,
        names.len(),
        names.join(", "),
        q2.ops.len()
    );
    Ok(Some((q2, rep2, note)))
}

/// The explicit bound's treatment: the tensors int8 would damage beyond `limit` lose their
/// range, then refinement to `limit` with no cap on the MACs moved.
fn bounded(
    g: &Graph,
    samples: &[Vec<Vec<f32>>],
    ranges: &mut quantize::Ranges,
    limit: f32,
    notes: &mut Vec<String>,
) -> Result<refine::Refined> {
    keep_lossy_in_f32(g, samples, ranges, limit, notes)?;
    refine::refine(g, samples, ranges, limit, limit, None).context("int8 accuracy refinement")
}

/// Why the default output guard's moves happened, for their note.
const GUARD_NOTE: &str = " (the default output guard; --int8-error-limit 0 turns it off)";

/// The note listing the ops a refinement moved to f32 (none: no note).
fn note_moved(notes: &mut Vec<String>, moved: &[refine::Moved], limit: f32, why: &str) {
    if moved.is_empty() {
        return;
    }
    let shown: Vec<String> = moved
        .iter()
        .map(|m| format!("'{}' ({}) +{:.1}%", m.op, m.kind, 100.0 * m.added))
        .collect();
    notes.push(format!(
        "{} ops stay f32: their int8 form added more than {:.0}% error on the calibration samples{}: {}",
        moved.len(),
        100.0 * limit,
        why,
        shown.join(", ")
    ));
}

/// Drop the range of every tensor that int8 would damage beyond `limit`, so the ops
/// touching it stay f32, and say which and why.
fn keep_lossy_in_f32(
    g: &Graph,
    samples: &[Vec<Vec<f32>>],
    ranges: &mut quantize::Ranges,
    limit: f32,
    notes: &mut Vec<String>,
) -> Result<()> {
    let errs = calibrate::tensor_errors(g, samples, ranges).context("int8 error estimate")?;
    let mut lossy: Vec<(usize, f32)> = errs.into_iter().filter(|&(_, e)| e > limit).collect();
    lossy.sort_by(|a, b| b.1.total_cmp(&a.1));
    for &(t, _) in &lossy {
        ranges.remove(&t);
    }
    if !lossy.is_empty() {
        let shown: Vec<String> = lossy
            .iter()
            .take(4)
            .map(|&(t, e)| format!("'{}' {:.1}%", g.tensors[t].name, 100.0 * e))
            .collect();
        notes.push(format!(
            "{} tensors stay f32: int8 would lose more than {:.0}% of them on the calibration samples ({}{}); --int8-error-limit sets the bound",
            lossy.len(),
            100.0 * limit,
            shown.join(", "),
            if lossy.len() > 4 { ", ..." } else { "" }
        ));
    }
    Ok(())
}

/// Graph outputs must be arena tensors written by an op: copy constants and pass-through
/// inputs into fresh tensors.
fn materialize_outputs(g: &mut Graph) {
    for k in 0..g.outputs.len() {
        let t = g.outputs[k];
        let needs = g.tensors[t].is_const() || g.inputs.contains(&t) || g.outputs[..k].contains(&t);
        if needs {
            let h = g.tensors[t].clone();
            let id = g.add(format!("{}:out", h.name), h.dtype, h.shape.clone());
            g.tensors[id].quant = h.quant.clone();
            g.ops.push(ir::HOp {
                kind: OpKind::Reshape,
                inputs: vec![Some(t)],
                outputs: vec![id],
                params: vec![],
                name: format!("{}:copy", h.name),
            });
            g.outputs[k] = id;
        }
    }
}
