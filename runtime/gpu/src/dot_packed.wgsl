// Σk (x[k] − zx) · w[k] with dot4I8Packed (WGSL packed_4x8_integer_dot_product), four
// products per call: Σ x·w − zx · Σ w, exact in wrapping i32 like the reference. Used
// when rows start on 4-byte boundaries (PACKED = 1: K % 4 == 0); the tail and other rows
// go element by element.
fn fc_dot(xb: u32, wb: u32, k: u32) -> i32 {
    let zx = p(ZX);
    var acc = 0;
    var kk = 0u;
    if (p(PACKED) == 1) {
        var xw = 0;
        var ws = 0;
        for (; kk + 4u <= k; kk += 4u) {
            let wv = weights[(wb + kk) >> 2u];
            xw += dot4I8Packed(arena[(xb + kk) >> 2u], wv);
            ws += dot4I8Packed(0x01010101u, wv);
        }
        acc = xw - zx * ws;
    }
    for (; kk < k; kk++) {
        acc += (arena_i8(xb + kk) - zx) * weight_i8(wb + kk);
    }
    return acc;
}
