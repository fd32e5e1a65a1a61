//! Instructions per op: a `Backend` wrapper that reads SysTick around every `execute` and
//! logs one line per Conv / FullyConnected (kind, shapes, MACs, instructions, per MAC) and
//! one total per other op kind. It also logs a digest of every op's output bytes
//! (`digest N X`, FNV-1a 32, outside the timed span), which the host test compares op by
//! op with the host interpreter's, so a kernel that differs is named even where the
//! model's final output hides it. The same SysTick method as the whole-inference figure
//! (`clock.rs`: 40 instructions per tick under `qemu -icount shift=0`), so each figure is
//! good to ±40 instructions plus the two counter reads.

use cairn_core::op::conv as p;
use cairn_core::{Backend, ExecError, KernelId, OpCall, OpKind, TensorMut};
use cortex_m::peripheral::SYST;

use crate::clock::insns;

/// The most op kinds the summary keeps apart (others add to the last row).
const KINDS: usize = 16;

/// What one op kind cost in an inference.
#[derive(Clone, Copy)]
struct KindTotal {
    kind: Option<OpKind>,
    ops: u32,
    insns: u32,
}

/// Wraps a backend; while `logging` is set it logs each conv-like op and keeps per-kind
/// totals for `summary`.
pub struct Profiled<B> {
    pub inner: B,
    pub logging: bool,
    totals: [KindTotal; KINDS],
    index: u32,
}

impl<B> Profiled<B> {
    pub fn new(inner: B) -> Self {
        Profiled {
            inner,
            logging: false,
            totals: [KindTotal {
                kind: None,
                ops: 0,
                insns: 0,
            }; KINDS],
            index: 0,
        }
    }

    fn add(&mut self, kind: OpKind, n: u32) {
        let slot = self
            .totals
            .iter()
            .position(|t| t.kind == Some(kind) || t.kind.is_none())
            .unwrap_or(KINDS - 1);
        let t = &mut self.totals[slot];
        t.kind.get_or_insert(kind);
        t.ops += 1;
        t.insns += n;
    }

    /// Log the per-kind totals gathered while `logging` was set.
    pub fn summary(&self) {
        for t in self.totals.iter() {
            if let Some(kind) = t.kind {
                defmt::println!(
                    "op total {}: {=u32} ops, {=u32} instructions",
                    defmt::Debug2Format(&kind),
                    t.ops,
                    t.insns
                );
            }
        }
    }
}

/// FNV-1a (32-bit) of `bytes`: the per-op digest the host test recomputes.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// Multiply-accumulates of a Conv or FullyConnected call (0 for other ops or bad shapes).
fn macs(call: &OpCall<'_>, out: &TensorMut<'_>) -> u64 {
    let (Some(w), oshape) = (call.input(1), out.info.shape) else {
        return 0;
    };
    let per_output = w.info.shape.prod(1, w.info.shape.rank()) as u64;
    match call.kind {
        OpKind::Conv | OpKind::FullyConnected => oshape.prod(0, oshape.rank()) as u64 * per_output,
        _ => 0,
    }
}

impl<B: Backend> Backend for Profiled<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn supports(&self, kernel: KernelId) -> bool {
        self.inner.supports(kernel)
    }

    fn execute(&mut self, call: &OpCall<'_>, out: TensorMut<'_>) -> Result<(), ExecError> {
        if !self.logging {
            return self.inner.execute(call, out);
        }
        let mac_count = macs(call, &out);
        let oshape = out.info.shape;
        let TensorMut { info, data } = out;
        let t0 = SYST::get_current();
        let r = self.inner.execute(
            call,
            TensorMut {
                info,
                data: &mut *data,
            },
        );
        let t1 = SYST::get_current();
        let n = insns(t0, t1);
        defmt::println!("digest {=u32} {=u32}", self.index, fnv1a(data));
        self.add(call.kind, n);
        if mac_count > 0 {
            let ishape = call.input(0).map(|x| x.info.shape);
            let wshape = call.input(1).map(|w| w.info.shape);
            let (group, stride) = if call.kind == OpKind::Conv {
                (call.param(p::GROUP), call.param(p::SH))
            } else {
                (1, 1)
            };
            defmt::println!(
                "op {=u32} {} in {} w {} out {} group {=i32} stride {=i32}: {=u64} MACs, {=u32} instructions, {=u32}.{=u32:02} per MAC",
                self.index,
                defmt::Debug2Format(&call.kind),
                ishape.as_ref().map_or(&[][..], |s| s.dims()),
                wshape.as_ref().map_or(&[][..], |s| s.dims()),
                oshape.dims(),
                group,
                stride,
                mac_count,
                n,
                (n as u64 / mac_count) as u32,
                ((n as u64 * 100 / mac_count) % 100) as u32
            );
        } else if n >= 100_000 {
            // Other ops that cost something: per output element.
            let elements = oshape.prod(0, oshape.rank()).max(1) as u32;
            defmt::println!(
                "op {=u32} {} out {}: {=u32} elements, {=u32} instructions, {=u32} per element",
                self.index,
                defmt::Debug2Format(&call.kind),
                oshape.dims(),
                elements,
                n,
                n / elements
            );
        }
        self.index += 1;
        r
    }
}
