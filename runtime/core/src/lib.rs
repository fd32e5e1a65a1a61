//! cairn-core: the part of cairn that every device links.
//!
//! It owns the `.cairn` model format (parse with every check done once at load, and — with
//! the `alloc` feature — emit and plan), the shape rules of every op, the `Backend` trait
//! and the `Interpreter` that runs a model from `&[u8]` inside a caller-provided arena.
//!
//! It must never allocate (without `alloc`), never panic on bytes from outside, and never
//! know about files, sockets or threads.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod accel;
pub mod backend;
pub mod crc32;
pub mod dtype;
pub mod error;
pub mod format;
pub mod interp;
pub mod kernel;
pub mod layout;
pub mod model;
pub mod op;
pub mod partition;
pub mod platform;
pub mod quant;
pub mod shape;
pub mod tensor;

#[cfg(feature = "alloc")]
pub mod emit;
#[cfg(feature = "alloc")]
pub mod plan;

pub use backend::{Backend, OpCall, Params};
pub use dtype::DType;
pub use error::{ExecError, LoadError, RunError};
pub use interp::Interpreter;
pub use kernel::{KernelId, KernelSet};
pub use layout::Layout;
pub use model::Model;
pub use op::OpKind;
pub use quant::Quant;
pub use shape::Shape;
pub use tensor::{TensorInfo, TensorMut, TensorRef};

#[cfg(target_endian = "big")]
compile_error!("cairn's formats are little-endian; big-endian targets are not supported yet");

/// Bytes aligned to 16, for models embedded with `include_bytes!` (see [`include_model!`]).
#[repr(C, align(16))]
pub struct Aligned<T: ?Sized>(pub T);

/// Embed a `.cairn` file with the 16-byte alignment `Model::parse` requires.
#[macro_export]
macro_rules! include_model {
    ($path:expr) => {{
        static ALIGNED: &$crate::Aligned<[u8]> = &$crate::Aligned(*include_bytes!($path));
        &ALIGNED.0
    }};
}
