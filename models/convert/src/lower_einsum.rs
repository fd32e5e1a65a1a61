//! Einsum in its matrix-product forms, lowered onto ReduceSum (`Reduce`), Transpose,
//! Reshape and MatMul (a FullyConnected when the second operand is a constant matrix):
//! one operand (transpose, sums, diagonals) or two (batch, free and contracted letters).
//! Ellipses become letters of their own; a repeated letter in one operand takes the
//! diagonal (identity mask and a sum). Broadcasting of size-1 dims is refused.

use anyhow::{bail, Result};
use cairn_core::op::ReduceFn;
use cairn_core::{DType, OpKind};

use crate::lower::{Lower, Val};
use crate::lower_math::op_as;
use crate::onnx::{Attrs, NodeProto};

pub(crate) fn einsum(l: &mut Lower, n: &NodeProto) -> Result<()> {
    let eq: String = Attrs(n)
        .string("equation", "")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let ranks: Vec<usize> = (0..n.input.len())
        .map(|k| l.in_t(n, k).map(|t| l.shape(t).len()))
        .collect::<Result<_>>()?;
    let (lhs, rhs) = expand_ellipsis(&eq, &ranks)?;
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != n.input.len() || !(1..=2).contains(&terms.len()) {
        bail!("Einsum '{eq}': only one or two operands are supported");
    }
    let mut ops = Vec::new();
    for (k, term) in terms.iter().enumerate() {
        let t = l.in_t(n, k)?;
        let letters: Vec<char> = term.chars().collect();
        if letters.len() != l.shape(t).len() {
            bail!("Einsum '{eq}': operand {k} does not match its term");
        }
        let (t, letters) = diagonals(l, t, letters)?;
        // Letters no other operand nor the output has are summed away first.
        let keep = |c: &char| {
            rhs.contains(*c)
                || terms
                    .iter()
                    .enumerate()
                    .any(|(j, o)| j != k && o.contains(*c))
        };
        let t = sum_out(l, t, &letters, &keep)?;
        ops.push((t, letters.into_iter().filter(keep).collect::<Vec<char>>()));
    }
    let out: Vec<char> = rhs.chars().collect();
    let (y, letters) = if ops.len() == 1 {
        ops.remove(0)
    } else {
        let (b, a) = (ops.remove(1), ops.remove(0));
        product(l, a, b, &out)?
    };
    let perm: Vec<usize> = out
        .iter()
        .map(|c| letters.iter().position(|x| x == c))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow::anyhow!("Einsum '{eq}': an output letter is in no operand"))?;
    if perm.len() != letters.len() {
        bail!("Einsum '{eq}': output letters do not match the operands'");
    }
    let y = if perm.iter().enumerate().all(|(i, &p)| i == p) {
        y
    } else {
        l.transpose(y, &perm)?
    };
    l.out(n, 0, Val::T(y));
    Ok(())
}

/// The output of an equation without `->`: the letters seen once, in alphabetical order.
fn implicit_output(eq: &str) -> String {
    let mut once: Vec<char> = eq
        .chars()
        .filter(|c| c.is_alphabetic() && eq.matches(*c).count() == 1)
        .collect();
    once.sort_unstable();
    once.into_iter().collect()
}

/// The equation with each `...` replaced by letters of its own (upper case, unused
/// elsewhere), right-aligned across operands as broadcasting aligns them, and the output
/// made explicit: (operand terms, output term).
fn expand_ellipsis(eq: &str, ranks: &[usize]) -> Result<(String, String)> {
    let (lhs, rhs) = match eq.split_once("->") {
        Some((a, b)) => (a.to_string(), Some(b.to_string())),
        None => (eq.to_string(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ranks.len() {
        bail!(
            "Einsum '{eq}': {} terms for {} operands",
            terms.len(),
            ranks.len()
        );
    }
    let spare: Vec<char> = ('A'..='Z').filter(|c| !eq.contains(*c)).collect();
    let mut widest = 0;
    let mut expanded = Vec::new();
    for (term, &rank) in terms.iter().zip(ranks) {
        match term.split_once("...") {
            Some((head, tail)) => {
                let named = head.chars().count() + tail.chars().count();
                let k = rank
                    .checked_sub(named)
                    .filter(|&k| k <= spare.len())
                    .ok_or_else(|| {
                        anyhow::anyhow!("Einsum '{eq}': a term does not fit its operand")
                    })?;
                widest = widest.max(k);
                expanded.push((head.to_string(), Some(k), tail.to_string()));
            }
            None => expanded.push((term.to_string(), None, String::new())),
        }
    }
    // An operand with k ellipsis dims takes the last k of the widest set.
    let letters = |k: usize| -> String { spare[widest - k..widest].iter().collect() };
    let lhs: Vec<String> = expanded
        .iter()
        .map(|(head, k, tail)| match k {
            Some(k) => format!("{head}{}{tail}", letters(*k)),
            None => head.clone(),
        })
        .collect();
    let lhs = lhs.join(",");
    let rhs = match rhs {
        Some(r) => r.replace("...", &letters(widest)),
        None => {
            letters(widest)
                + &implicit_output(&lhs.replace(|c: char| c.is_uppercase() && !eq.contains(c), ""))
        }
    };
    Ok((lhs, rhs))
}

/// Take the diagonal of every letter `t`'s term repeats (`ii`): multiply by an identity
/// mask over the two axes and sum the second away. Returns the tensor and its letters.
fn diagonals(l: &mut Lower, mut t: usize, mut letters: Vec<char>) -> Result<(usize, Vec<char>)> {
    while let Some((i, j)) = (0..letters.len())
        .flat_map(|i| (i + 1..letters.len()).map(move |j| (i, j)))
        .find(|&(i, j)| letters[i] == letters[j])
    {
        let shape = l.shape(t);
        let size = shape[i];
        if shape[j] != size {
            bail!(
                "Einsum: repeated letter '{}' has sizes {size} and {}",
                letters[i],
                shape[j]
            );
        }
        let mut mask_shape = vec![1; shape.len()];
        mask_shape[i] = size;
        mask_shape[j] = size;
        let eye: Vec<f32> = (0..size * size)
            .map(|k| if k / size == k % size { 1.0 } else { 0.0 })
            .collect();
        let mask =
            l.g.add_f32(format!("{}:diagonal", l.node_name), mask_shape, &eye);
        let masked = l.binary(OpKind::Mul, t, mask)?;
        let params = vec![ReduceFn::Sum as i32, 1 << j, 0, 0];
        t = op_as(
            l,
            OpKind::Reduce,
            vec![Some(masked)],
            params,
            &[],
            DType::F32,
        )?;
        letters.remove(j);
    }
    Ok((t, letters))
}

/// Sum `t` over the letters `keep` rejects (none: `t` itself).
fn sum_out(
    l: &mut Lower,
    t: usize,
    letters: &[char],
    keep: &dyn Fn(&char) -> bool,
) -> Result<usize> {
    let mask = letters
        .iter()
        .enumerate()
        .filter(|(_, c)| !keep(c))
        .fold(0i32, |m, (i, _)| m | (1 << i));
    if mask == 0 {
        return Ok(t);
    }
    let params = vec![ReduceFn::Sum as i32, mask, 0, 0];
    op_as(l, OpKind::Reduce, vec![Some(t)], params, &[], DType::F32)
}

/// A·B over the shared letters missing from the output, batched over the shared letters
/// in it: returns the product and its letters (batch, A's free, B's free).
fn product(
    l: &mut Lower,
    (a, la): (usize, Vec<char>),
    (b, lb): (usize, Vec<char>),
    out: &[char],
) -> Result<(usize, Vec<char>)> {
    let (sa, sb) = (l.shape(a), l.shape(b));
    let dim = |letters: &[char], shape: &[usize], c: char| {
        letters.iter().position(|&x| x == c).map(|i| shape[i])
    };
    let batch: Vec<char> = la
        .iter()
        .copied()
        .filter(|c| lb.contains(c) && out.contains(c))
        .collect();
    let contract: Vec<char> = la
        .iter()
        .copied()
        .filter(|c| lb.contains(c) && !out.contains(c))
        .collect();
    let a_free: Vec<char> = la.iter().copied().filter(|c| !lb.contains(c)).collect();
    let b_free: Vec<char> = lb.iter().copied().filter(|c| !la.contains(c)).collect();
    for &c in batch.iter().chain(&contract) {
        if dim(&la, &sa, c) != dim(&lb, &sb, c) {
            bail!("Einsum: letter '{c}' has different sizes in the two operands");
        }
    }
    let size = |letters: &[char], own: &[char], shape: &[usize]| -> usize {
        letters.iter().filter_map(|&c| dim(own, shape, c)).product()
    };
    let (bt, m, k, nn) = (
        size(&batch, &la, &sa),
        size(&a_free, &la, &sa),
        size(&contract, &la, &sa),
        size(&b_free, &lb, &sb),
    );
    let order = |own: &[char], groups: &[&[char]]| -> Vec<usize> {
        groups
            .iter()
            .flat_map(|g| g.iter())
            .filter_map(|c| own.iter().position(|x| x == c))
            .collect()
    };
    let a = permute(l, a, &order(&la, &[&batch, &a_free, &contract]))?;
    let b = permute(l, b, &order(&lb, &[&batch, &contract, &b_free]))?;
    let (a, b) = if batch.is_empty() {
        (l.reshape(a, &[m, k])?, l.reshape(b, &[k, nn])?)
    } else {
        (l.reshape(a, &[bt, m, k])?, l.reshape(b, &[bt, k, nn])?)
    };
    let y = crate::lower_nn::matmul(l, a, b)?;
    let mut dims = Vec::new();
    let mut letters = Vec::new();
    for (own, shape, group) in [(&la, &sa, &batch), (&la, &sa, &a_free), (&lb, &sb, &b_free)] {
        for &c in group.iter() {
            dims.extend(dim(own, shape, c));
            letters.push(c);
        }
    }
    Ok((l.reshape(y, &dims)?, letters))
}

fn permute(l: &mut Lower, t: usize, perm: &[usize]) -> Result<usize> {
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        Ok(t)
    } else {
        l.transpose(t, perm)
    }
}
