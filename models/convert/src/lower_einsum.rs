//! Einsum in its matrix-product forms, lowered onto ReduceSum (`Reduce`), Transpose,
//! Reshape and MatMul (a FullyConnected when the second operand is a constant matrix):
//! one operand (transpose, sums) or two (batch, free and contracted letters). Ellipses
//! and repeated letters in one operand (diagonals) are refused.

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
    let (lhs, rhs) = match eq.split_once("->") {
        Some((a, b)) => (a.to_string(), b.to_string()),
        None => (eq.clone(), implicit_output(&eq)),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if eq.contains('.') || terms.len() != n.input.len() || !(1..=2).contains(&terms.len()) {
        bail!("Einsum '{eq}': only one or two operands without ellipses are supported");
    }
    let mut ops = Vec::new();
    for (k, term) in terms.iter().enumerate() {
        let t = l.in_t(n, k)?;
        let letters: Vec<char> = term.chars().collect();
        if letters.len() != l.shape(t).len() || has_repeat(&letters) {
            bail!("Einsum '{eq}': operand {k} does not match its term (or repeats a letter)");
        }
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

fn has_repeat(letters: &[char]) -> bool {
    letters
        .iter()
        .enumerate()
        .any(|(i, c)| letters[i + 1..].contains(c))
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
