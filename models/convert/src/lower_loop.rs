//! `Loop` and `Scan` with a trip count known at convert time, unrolled: the body graph is
//! lowered once per iteration in the node's scope (as an `If`'s taken branch is), its
//! loop-carried values fed from the last iteration's, and the per-iteration scan outputs
//! stacked with Reshape and Concat. A trip count or condition computed at run time is
//! refused, and so is an unrolling past [`MAX_UNROLL`] iterations (the graph would grow
//! with every one).

use anyhow::{anyhow, bail, Context, Result};

use crate::lower::{Lower, Val};
use crate::onnx::{Attrs, HostTensor};
use crate::onnx_pb::{GraphProto, NodeProto};

/// The most iterations an unrolled Loop or Scan may have.
pub const MAX_UNROLL: usize = 1024;

impl<'m> Lower<'m> {
    /// ONNX `Loop`: inputs (max trip count M, condition, carried values v…), body inputs
    /// (iteration number, condition, v…), body outputs (condition, v…, scan outputs…),
    /// node outputs (final v…, scan outputs stacked along a new first axis).
    pub(crate) fn loop_op(&mut self, n: &'m NodeProto) -> Result<()> {
        let body = Attrs(n)
            .graph("body")
            .ok_or_else(|| anyhow!("Loop without its body"))?;
        let carried_n = n.input.len().saturating_sub(2);
        if body.input.len() != carried_n + 2 || body.output.len() < carried_n + 1 {
            bail!(
                "Loop: the body takes {} inputs and gives {} outputs for {carried_n} carried values",
                body.input.len(),
                body.output.len()
            );
        }
        let scan_n = body.output.len() - 1 - carried_n;
        let known = |l: &Self, k: usize, what: &str| -> Result<Option<i64>> {
            match n.input.get(k).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(name) => {
                    let h = l.host(name).map_err(|_| {
                        anyhow!("Loop: the {what} is computed at run time; cairn unrolls a Loop only when its trip count and condition are known at convert time")
                    })?;
                    let v = h.to_i64();
                    Ok(Some(
                        *v.first().ok_or_else(|| anyhow!("Loop: empty {what}"))?,
                    ))
                }
            }
        };
        let trips = known(self, 0, "trip count")?;
        // Without a trip count only the body's condition ends it (known at convert time).
        let mut cond = known(self, 1, "condition")?.is_none_or(|c| c != 0);
        let mut carried: Vec<Val> = n.input[2..]
            .iter()
            .map(|name| self.val(name))
            .collect::<Result<_>>()?;
        let mut scans: Vec<Vec<Val>> = vec![Vec::new(); scan_n];
        let outer = self.node_name.clone();
        let mut i = 0usize;
        while cond && trips.is_none_or(|m| (i as i64) < m) {
            if i == MAX_UNROLL {
                bail!("Loop '{outer}': more than {MAX_UNROLL} iterations to unroll");
            }
            self.vals.insert(
                body.input[0].name.clone(),
                Val::Int(HostTensor::i64(vec![], vec![i as i64])),
            );
            self.vals.insert(
                body.input[1].name.clone(),
                Val::Int(HostTensor::i64(vec![], vec![1])),
            );
            for (inp, v) in body.input[2..].iter().zip(&carried) {
                self.vals.insert(inp.name.clone(), v.clone());
            }
            self.inline_again(body, i)
                .with_context(|| format!("in iteration {i} of Loop '{outer}'"))?;
            let c = self.host(&body.output[0].name).map_err(|_| {
                anyhow!("Loop '{outer}': the body's condition is computed at run time; cairn unrolls only loops whose condition is known at convert time")
            })?;
            cond = c.to_i64().first().is_some_and(|&c| c != 0);
            for (k, o) in body.output[1..=carried_n].iter().enumerate() {
                carried[k] = self.val(&o.name)?;
            }
            for (k, o) in body.output[carried_n + 1..].iter().enumerate() {
                scans[k].push(self.val(&o.name)?);
            }
            i += 1;
        }
        self.node_name = outer;
        for (k, v) in carried.into_iter().enumerate() {
            self.out(n, k, v);
        }
        for (k, parts) in scans.into_iter().enumerate() {
            if parts.is_empty() {
                bail!(
                    "Loop '{}': no iteration ran, so its scan outputs have no shape",
                    self.node_name
                );
            }
            let v = self.stack(parts, 0)?;
            self.out(n, carried_n + k, v);
        }
        self.notes.push(format!(
            "Loop '{}': trip count known at convert time, unrolled {i} times",
            self.node_name
        ));
        Ok(())
    }

    /// ONNX `Scan` (opset 9 on; opset 8's batched form with a batch of one): states and
    /// scan inputs in, the body run once per slice along each scan input's axis, states
    /// carried, per-slice outputs stacked along each scan output's axis.
    pub(crate) fn scan_op(&mut self, n: &'m NodeProto) -> Result<()> {
        let a = Attrs(n);
        let body = a
            .graph("body")
            .ok_or_else(|| anyhow!("Scan without its body"))?;
        let k_in = usize::try_from(a.int("num_scan_inputs", 0))
            .ok()
            .filter(|&k| k > 0)
            .ok_or_else(|| anyhow!("Scan needs num_scan_inputs"))?;
        // Opset 8: an optional sequence_lens first, and a batch axis on every input.
        let batched = self.opset < 9;
        let inputs: Vec<&String> = n.input.iter().skip(usize::from(batched)).collect();
        if batched {
            if let Some(s) = n.input.first().filter(|s| !s.is_empty()) {
                bail!("Scan (opset 8): sequence_lens '{s}' is not supported; give every sequence its full length");
            }
        }
        let states_n = inputs
            .len()
            .checked_sub(k_in)
            .ok_or_else(|| anyhow!("Scan: fewer inputs than num_scan_inputs"))?;
        if body.input.len() != states_n + k_in || body.output.len() < states_n {
            bail!("Scan: the body's inputs and outputs do not match the node's");
        }
        let k_out = body.output.len() - states_n;
        let ints = |name: &str, len: usize| -> Result<Vec<i64>> {
            let v = a.ints(name).unwrap_or_else(|| vec![0; len]);
            if v.len() != len {
                bail!("Scan: {name} has {} entries for {len}", v.len());
            }
            Ok(v)
        };
        let (in_axes, in_dirs) = if batched {
            (vec![0; k_in], ints("directions", k_in)?)
        } else {
            (
                ints("scan_input_axes", k_in)?,
                ints("scan_input_directions", k_in)?,
            )
        };
        let (out_axes, out_dirs) = if batched {
            (vec![0; k_out], vec![0; k_out])
        } else {
            (
                ints("scan_output_axes", k_out)?,
                ints("scan_output_directions", k_out)?,
            )
        };
        // Every value as a tensor, a batch of one dropped (opset 8).
        let mut tensors = Vec::new();
        for name in &inputs {
            let t = self.t(name)?;
            let s = self.shape(t);
            let t = if batched {
                if s.first() != Some(&1) {
                    bail!("Scan (opset 8): only a batch of one is supported (input '{name}' has {s:?})");
                }
                self.reshape(t, &s[1..])?
            } else {
                t
            };
            tensors.push(t);
        }
        let mut states: Vec<Val> = tensors[..states_n].iter().map(|&t| Val::T(t)).collect();
        let scan_in: Vec<(usize, usize, bool)> = tensors[states_n..]
            .iter()
            .zip(in_axes.iter().zip(&in_dirs))
            .map(|(&t, (&ax, &dir))| {
                let r = self.shape(t).len() as i64;
                let ax = if ax < 0 { ax + r } else { ax };
                if !(0..r).contains(&ax) {
                    bail!("Scan: scan input axis {ax} out of range");
                }
                Ok((t, ax as usize, dir != 0))
            })
            .collect::<Result<_>>()?;
        let steps = scan_in
            .first()
            .map(|&(t, ax, _)| self.shape(t)[ax])
            .ok_or_else(|| anyhow!("Scan without scan inputs"))?;
        if scan_in.iter().any(|&(t, ax, _)| self.shape(t)[ax] != steps) {
            bail!("Scan: scan inputs of different lengths");
        }
        if steps > MAX_UNROLL {
            bail!("Scan: {steps} steps to unroll, more than {MAX_UNROLL}");
        }
        let outer = self.node_name.clone();
        let mut scans: Vec<Vec<Val>> = vec![Vec::new(); k_out];
        for i in 0..steps {
            for (k, v) in states.iter().enumerate() {
                self.vals.insert(body.input[k].name.clone(), v.clone());
            }
            for (j, &(t, ax, rev)) in scan_in.iter().enumerate() {
                let at = if rev { steps - 1 - i } else { i };
                let slice = self.take(t, ax, at)?;
                self.vals
                    .insert(body.input[states_n + j].name.clone(), Val::T(slice));
            }
            self.inline_again(body, i)
                .with_context(|| format!("in step {i} of Scan '{outer}'"))?;
            for (k, o) in body.output[..states_n].iter().enumerate() {
                states[k] = self.val(&o.name)?;
            }
            for (k, o) in body.output[states_n..].iter().enumerate() {
                scans[k].push(self.val(&o.name)?);
            }
        }
        self.node_name = outer;
        let batch = |l: &mut Self, v: Val| -> Result<Val> {
            if !batched {
                return Ok(v);
            }
            let t = l.val_t(v)?;
            let mut s = vec![1];
            s.extend(l.shape(t));
            Ok(Val::T(l.reshape(t, &s)?))
        };
        for (k, v) in states.into_iter().enumerate() {
            let v = batch(self, v)?;
            self.out(n, k, v);
        }
        for (k, mut parts) in scans.into_iter().enumerate() {
            if parts.is_empty() {
                bail!(
                    "Scan '{}': no step ran, so its scan outputs have no shape",
                    self.node_name
                );
            }
            if out_dirs[k] != 0 {
                parts.reverse();
            }
            let first = self.val_t(parts[0].clone())?;
            let rank = self.shape(first).len() as i64 + 1;
            let ax = out_axes[k];
            let ax = if ax < 0 { ax + rank } else { ax };
            if !(0..rank).contains(&ax) {
                bail!("Scan: scan output axis {} out of range", out_axes[k]);
            }
            let v = self.stack(parts, ax as usize)?;
            let v = batch(self, v)?;
            self.out(n, states_n + k, v);
        }
        self.notes.push(format!(
            "Scan '{}': {steps} steps known at convert time, unrolled",
            self.node_name
        ));
        Ok(())
    }

    /// The body's nodes lowered again for iteration `i` (its initializers and the
    /// consumer index were taken on the first).
    fn inline_again(&mut self, body: &'m GraphProto, i: usize) -> Result<()> {
        if i == 0 {
            self.inline(body)
        } else {
            self.inline_nodes(body)
        }
    }

    /// A value as a graph tensor (integer host values become f32 constants, as `t` does).
    fn val_t(&mut self, v: Val) -> Result<usize> {
        match v {
            Val::T(t) | Val::FakeQ { t, .. } => Ok(t),
            Val::Int(h) => Ok(self.g.add_f32(
                format!("{}:value", self.node_name),
                h.shape.clone(),
                &h.to_f32(),
            )),
            Val::Absent => bail!("a loop value is absent"),
        }
    }

    /// Slice `at` of `t` along `axis`, the axis dropped.
    fn take(&mut self, t: usize, axis: usize, at: usize) -> Result<usize> {
        let s = self.shape(t);
        let y = crate::lower_rnn::take(self, t, axis, at, 1)?;
        let mut out = s[..axis].to_vec();
        out.extend(&s[axis + 1..]);
        self.reshape(y, &out)
    }

    /// Values of every iteration stacked along a new axis `axis`.
    fn stack(&mut self, parts: Vec<Val>, axis: usize) -> Result<Val> {
        if parts.iter().all(|v| matches!(v, Val::Int(_))) {
            // Host values stay host values (an unrolled Range's output, indices).
            let hs: Vec<HostTensor> = parts
                .into_iter()
                .map(|v| match v {
                    Val::Int(h) => h,
                    _ => unreachable!("checked above"),
                })
                .collect();
            return Ok(Val::Int(crate::lower_shape::stack_host(&hs, axis)?));
        }
        let mut ts = Vec::with_capacity(parts.len());
        for v in parts {
            let t = self.val_t(v)?;
            let mut s = self.shape(t);
            if axis > s.len() {
                bail!("stack axis {axis} past rank {}", s.len());
            }
            s.insert(axis, 1);
            ts.push(self.reshape(t, &s)?);
        }
        let first = self.shape(ts[0]);
        if ts.iter().any(|&t| {
            let s = self.shape(t);
            s.len() != first.len()
                || s.iter()
                    .zip(&first)
                    .enumerate()
                    .any(|(d, (a, b))| d != axis && a != b)
        }) {
            bail!("the iterations' outputs differ in shape");
        }
        Ok(Val::T(self.concat(&ts, axis)?))
    }
}
