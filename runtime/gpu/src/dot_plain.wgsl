// Σk (x[k] − zx) · w[k] one element at a time, for devices without
// packed_4x8_integer_dot_product.
fn fc_dot(xb: u32, wb: u32, k: u32) -> i32 {
    let zx = p(ZX);
    var acc = 0;
    for (var kk = 0u; kk < k; kk++) {
        acc += (arena_i8(xb + kk) - zx) * weight_i8(wb + kk);
    }
    return acc;
}
