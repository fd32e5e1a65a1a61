//! `cairn`: convert, inspect, run, bench and demo.

mod backends;
mod bench;
mod check;
mod demo;
mod engines;
mod field;
mod inspect;
mod int8_ref;
mod learn;
mod memory;
mod ort_backend;
mod samples;
mod sim;
mod sync;
mod tools;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "cairn: an int8 edge AI runtime that runs alone"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ConvertArgs {
    /// Fix dynamic input dims: NAME=1,3,48,192 for the input NAME (any ONNX name, `:`
    /// included), NAME:1,3,48,192 when NAME has no `:`, or 1,3,48,192 for the input at the
    /// flag's position (repeatable).
    #[arg(long = "input-shape", value_name = "[NAME=]DIMS")]
    pub input_shape: Vec<String>,
    /// Calibration inputs: a .npy file or a folder of .npy files for the first input (one
    /// sample per file, or a batch along the first axis), or a folder of sample folders
    /// each holding `<input name>.npy` per input (`/` in a name as `_`). Without it and
    /// without QDQ nodes the model stays f32.
    #[arg(long, value_name = "DIR_OR_NPY")]
    pub calibrate: Option<PathBuf>,
    /// Calibration range: "minmax", "mse" (the clip range of least int8 squared error) or
    /// a percentile such as "99.99".
    #[arg(long, default_value = "minmax")]
    pub method: String,
    /// Keep the model in f32 even if it has QDQ nodes.
    #[arg(long)]
    pub float: bool,
    /// Also output this intermediate ONNX value (repeatable), e.g. penultimate features
    /// to store as embeddings.
    #[arg(long = "extra-output", value_name = "NAME")]
    pub extra_output: Vec<String>,
    /// Pre-pack one-group int8 conv weights in the order the x86_64 (AVX2) and aarch64
    /// (NEON) GEMM micro-kernels read them: faster convs on those hosts, but each packed
    /// weight takes 2 bytes of flash instead of 1, and the model then needs the
    /// `Conv.i8-packed` kernel. Leave it off for microcontrollers.
    #[arg(long)]
    pub pack: bool,
    /// When calibrating, keep in f32 the tensors whose int8 form would lose more than
    /// this percentage (relative L2 error on the calibration samples) and the ops whose
    /// int8 form adds more than it while an output is off by more than it (5 is a good
    /// start for audio front ends and transformers). Without it, only outputs off by
    /// more than 35% move ops to f32, until they are within 20%, at most a quarter of the
    /// model's MACs (the output guard), and where that quarter is not enough the bound 5
    /// applies; 0 turns both off and quantizes every op that can be. Costs conversion
    /// time and, where ops move to f32, speed.
    #[arg(long, value_name = "PERCENT")]
    pub int8_error_limit: Option<f32>,
    /// Bits of the weights a calibrated conversion quantizes in one-group convs (QDQ
    /// models keep theirs; other ops keep 8): 7 (values in [-63, 63]) lets x86_64 hosts
    /// without VNNI multiply u8 x s8 (`vpmaddubsw`, 1.2-1.4x faster convs; other CPUs run
    /// both at one speed), 8 keeps [-127, 127], auto (the default) takes 7 bits where the
    /// calibration samples' output error stays within 5% of 8 bits' (or half a point),
    /// keeping 8 in the layers that lose most.
    #[arg(long, default_value = "auto", value_parser = parse_weight_bits)]
    pub weight_bits: cairn_convert::WeightBits,
    /// When calibrating, first move per-channel scales from activations into the weights
    /// that read them where that is exact (a LayerNorm's or conv's output channels read
    /// only by linear layers, through Relu, PRelu, data movement or a spectrum's square
    /// and square root), each kept only where its layer's int8 result gets closer to f32.
    #[arg(long)]
    pub smooth: bool,
    /// NAME=x.npy: the graph input NAME is this constant, folded into the model at convert
    /// time (a sample rate, a mode flag, a fixed mask), so ops that need it known (an `If`
    /// on it, a shape from it) convert (repeatable). The model then has no such input.
    #[arg(long = "const-input", value_name = "NAME=NPY")]
    pub const_input: Vec<String>,
    /// Unroll every LSTM, GRU and RNN into per-step ops. By default each direction of
    /// hidden size up to 512 (128 in an int8 conversion, whose unrolled steps read int8
    /// recurrent weights) is one `Recurrent` op.
    #[arg(long)]
    pub unroll_recurrent: bool,
}

/// `--weight-bits`: 7, 8 or auto.
fn parse_weight_bits(s: &str) -> Result<cairn_convert::WeightBits, String> {
    match s {
        "7" => Ok(cairn_convert::WeightBits::Seven),
        "8" => Ok(cairn_convert::WeightBits::Eight),
        "auto" => Ok(cairn_convert::WeightBits::Auto),
        _ => Err(format!("weight bits are 7, 8 or auto, not {s:?}")),
    }
}

/// What the command line gives without flags.
impl Default for ConvertArgs {
    fn default() -> Self {
        ConvertArgs {
            input_shape: vec![],
            calibrate: None,
            method: "minmax".into(),
            float: false,
            extra_output: vec![],
            pack: false,
            int8_error_limit: None,
            weight_bits: cairn_convert::WeightBits::Auto,
            smooth: false,
            const_input: vec![],
            unroll_recurrent: false,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// ONNX -> .cairn (fold, quantize, plan the arena).
    Convert {
        model: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        args: ConvertArgs,
    },
    /// List every node of an ONNX model that cairn cannot convert yet, with op and reason,
    /// all at once and before any conversion work (exit status 1 if there are any).
    Check {
        model: PathBuf,
        #[command(flatten)]
        args: ConvertArgs,
    },
    /// Show a .cairn file: ops, MACs, flash and arena bytes, kernels, quantization.
    Inspect {
        model: PathBuf,
        /// Also list every tensor with its quantization.
        #[arg(long)]
        tensors: bool,
        /// Show the partition: which backend runs which ops, and the transfers.
        #[arg(long)]
        backends: bool,
    },
    /// Run a .cairn model on .npy inputs.
    Run {
        model: PathBuf,
        /// NAME=x.npy for the input NAME (the ONNX name from `MODEL.names.json`, which
        /// `cairn convert` writes, or input0, input1, ...), or a bare x.npy for the next
        /// input not named (repeatable).
        #[arg(short, long, required = true, value_name = "[NAME=]NPY")]
        input: Vec<String>,
        /// Write the first output here (.npy).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Write every output into this folder as `<output name>.npy` (`/` in a name as `_`).
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
        /// Without --output or --output-dir, print the top-k of each output.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Time this many runs (after the first, which warms up) and print the median.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Per-op time profile over the timed runs.
        #[arg(long)]
        profile: bool,
        /// Run on the reference kernels only (slow; tells a kernel problem from a
        /// quantization one).
        #[arg(long)]
        reference: bool,
        /// `cpu`, `gpu` (the ops the GPU kernels cover on the GPU, the rest on the CPU;
        /// any GPU failure reruns on the CPU), or `ort[:EP]` (ONNX Runtime with the
        /// execution provider EP: cpu, xnnpack, nnapi, qnn, coreml, openvino; the ops the
        /// QDQ export covers there, the rest on the CPU; a missing EP falls back to ORT's
        /// CPU provider), or `ort:prefer-npu` / `ort:auto` (ONNX Runtime's device policy
        /// PREFER_NPU / MAX_EFFICIENCY picks the provider; it says when that is the CPU).
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Threads the CPU kernels split big ops across (outputs are the same bytes for
        /// every count).
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Latency of cairn against ONNX Runtime on the same ONNX model and inputs.
    Bench {
        model: PathBuf,
        #[command(flatten)]
        args: ConvertArgs,
        /// Timed runs per engine (after warm-up).
        #[arg(long, default_value_t = 50)]
        runs: usize,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// NAME=x.npy for the model's input NAME (its ONNX name, or input0, input1, ...),
        /// or a bare x.npy for the next input not named (repeatable, as in `cairn run`).
        /// Inputs not given come from the first calibration sample, else are synthetic:
        /// uniform in [-1, 1) for float inputs, zeros for integer and bool ones. Every
        /// engine gets each input in the element type the ONNX graph declares.
        #[arg(short, long, value_name = "[NAME=]NPY")]
        input: Vec<String>,
        /// Write a JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Per-op time profile of cairn.
        #[arg(long)]
        profile: bool,
        /// Also time ONNX Runtime on this int8 QDQ model (e.g. from quantize_static).
        #[arg(long, value_name = "ONNX")]
        ort_qdq: Option<PathBuf>,
        /// Also time ONNX Runtime on this int8 QOperator model.
        #[arg(long, value_name = "ONNX")]
        ort_qop: Option<PathBuf>,
        /// Compare cairn's backends instead, on a converted MODEL.cairn: a comma list of
        /// cpu, gpu, ort, ort:EP (one table, the same inputs, runs interleaved).
        #[arg(long, value_name = "LIST")]
        backends: Option<String>,
        /// Write a bar chart of the engines' latencies (SVG) here.
        #[arg(long, value_name = "SVG")]
        chart: Option<PathBuf>,
        /// Skip tract.
        #[arg(long)]
        no_tract: bool,
        /// Threads cairn's CPU kernels split big ops across, and ONNX Runtime's intra-op
        /// threads (tract stays on one)
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// The episodic memory store in a file: add, query, stats, compact, export.
    Memory {
        /// The store file (created erased if missing).
        store: PathBuf,
        /// Size of a new store, in 64 KiB sectors.
        #[arg(long, default_value_t = 64)]
        sectors: usize,
        #[command(subcommand)]
        cmd: memory::MemoryCmd,
    },
    /// Learn on the device: train an adapter from memory, the lineage, rollback, the
    /// class-incremental benchmark.
    Learn {
        #[command(subcommand)]
        cmd: learn::LearnCmd,
    },
    /// Sync memory records, deletions and adapter contributions with peers: keys, fleet,
    /// serve/connect over TCP or UDP, bundles for a USB stick.
    Sync {
        #[command(subcommand)]
        cmd: sync::SyncCmd,
    },
    /// Run a fleet scenario in the simulator over many seeds: progress, a summary table,
    /// SVG plots (convergence over time, bytes per link).
    Sim(sim::SimArgs),
    /// Convert and run the bundled models on bundled data; print accuracy and timing.
    Demo {
        /// Where the bundled models live.
        #[arg(long, default_value = "models/zoo")]
        zoo: PathBuf,
    },
}

fn main() -> Result<()> {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`cairn inspect m.cairn | head`)
    // would panic; restore the default: the process ends quietly, like other Unix tools.
    #[cfg(unix)]
    // SAFETY: sets a signal disposition before any thread exists; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match Cli::parse().cmd {
        Cmd::Convert {
            model,
            output,
            args,
        } => tools::convert_cmd(&model, &output, &args),
        Cmd::Check { model, args } => check::check(&model, &args),
        Cmd::Inspect {
            model,
            tensors,
            backends,
        } => match backends {
            true => backends::inspect(&model),
            false => inspect::inspect(&model, tensors),
        },
        Cmd::Run {
            model,
            input,
            output,
            output_dir,
            top_k,
            runs,
            profile,
            reference,
            backend,
            threads,
        } => backends::run_cmd(
            &backend,
            &model,
            &input,
            &tools::RunOutputs {
                first: output.as_deref(),
                dir: output_dir.as_deref(),
                top_k,
                runs,
                profile,
                reference,
                threads,
            },
        ),
        Cmd::Bench {
            model,
            runs,
            warmup,
            input,
            backends: Some(list),
            ..
        } => {
            if input.len() > 1 {
                anyhow::bail!("--backends takes one --input (the model's first input)");
            }
            let input = input.first().map(PathBuf::from);
            ort_backend::bench(&model, &list, runs, warmup, input.as_deref())
        }
        Cmd::Bench {
            model,
            args,
            runs,
            warmup,
            input,
            json,
            profile,
            ort_qdq,
            ort_qop,
            backends: None,
            chart,
            no_tract,
            threads,
        } => {
            let others = bench::Others {
                ort_qdq: ort_qdq.as_deref(),
                ort_qop: ort_qop.as_deref(),
                no_tract,
                chart: chart.as_deref(),
                threads,
            };
            bench::bench(
                &model,
                &args,
                runs,
                warmup,
                &input,
                json.as_deref(),
                profile,
                others,
            )
        }
        Cmd::Memory {
            store,
            sectors,
            cmd,
        } => memory::run(&store, sectors, cmd),
        Cmd::Learn { cmd } => learn::learn(cmd),
        Cmd::Sync { cmd } => sync::sync(cmd),
        Cmd::Sim(a) => sim::sim(&a),
        Cmd::Demo { zoo } => demo::demo(&zoo),
    }
}
