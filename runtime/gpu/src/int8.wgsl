// cairn's int8 kernels. One invocation writes one 32-bit word of the output: four int8
// elements, so no two invocations share a word. Every tensor starts on a 16-byte boundary
// of the arena, so the bytes past a tensor's end in its last word belong to no other
// tensor.
//
// Bindings: the arena (the model's plan, same offsets as on the CPU), the model's bytes
// (weights, biases, scales, tables; uploaded once), and this op's parameter words.

@group(0) @binding(0) var<storage, read_write> arena: array<u32>;
@group(0) @binding(1) var<storage, read> weights: array<u32>;
@group(0) @binding(2) var<uniform> params: array<vec4<i32>, 8>;

// Parameter word indices (kernels.rs has the same list).
const X_OFF = 0u;
const W_OFF = 1u;
const B_OFF = 2u;
const S_OFF = 3u;
const Y_OFF = 4u;
const NUMEL = 5u;
const ZX = 6u;
const ZY = 7u;
const LO = 8u;
const HI = 9u;
const C = 10u;
const H = 11u;
const W = 12u;
const OC = 13u;
const OH = 14u;
const OW = 15u;
const KH = 16u;
const KW = 17u;
const SH = 18u;
const SW = 19u;
const PT = 20u;
const PL = 21u;
const DH = 22u;
const DW = 23u;
const G = 24u;
const K = 25u;
const N = 26u;
const PACKED = 27u;

fn p(i: u32) -> i32 {
    return params[i / 4u][i % 4u];
}
fn pu(i: u32) -> u32 {
    return u32(params[i / 4u][i % 4u]);
}

fn arena_i8(b: u32) -> i32 {
    return extractBits(bitcast<i32>(arena[b >> 2u]), (b & 3u) * 8u, 8u);
}
fn weight_i8(b: u32) -> i32 {
    return extractBits(bitcast<i32>(weights[b >> 2u]), (b & 3u) * 8u, 8u);
}
fn weight_i32(b: u32) -> i32 {
    return bitcast<i32>(weights[b >> 2u]);
}
fn weight_f32(b: u32) -> f32 {
    return bitcast<f32>(weights[b >> 2u]);
}

// cairn_core::quant::requantize: one f32 multiply (correctly rounded on Vulkan, Metal and
// D3D12), a clamp in float, then round half to even. No add follows the multiply, so no
// contraction into a fused multiply-add can change it.
fn requantize(acc: i32, scale: f32, zp: i32, lo: i32, hi: i32) -> i32 {
    var v = f32(acc) * scale;
    let flo = f32(lo - zp);
    let fhi = f32(hi - zp);
    if (v < flo) {
        v = flo;
    } else if (v > fhi) {
        v = fhi;
    }
    return i32(round(v)) + zp;
}

fn word_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

fn store(word: u32, packed: u32) {
    arena[(pu(Y_OFF) >> 2u) + word] = packed;
}

fn conv_one(e: u32) -> i32 {
    let ow = pu(OW);
    let oh = pu(OH);
    let oc_n = pu(OC);
    let ox = e % ow;
    let oy = (e / ow) % oh;
    let oc = (e / (ow * oh)) % oc_n;
    let n = e / (ow * oh * oc_n);
    let c = pu(C);
    let h = p(H);
    let w = p(W);
    let groups = pu(G);
    let cg = c / groups;
    let grp = oc / (oc_n / groups);
    let kh = pu(KH);
    let kw = pu(KW);
    let zx = p(ZX);
    var acc = 0;
    if (p(B_OFF) >= 0) {
        acc = weight_i32(pu(B_OFF) + 4u * oc);
    }
    let iy0 = i32(oy) * p(SH) - p(PT);
    let ix0 = i32(ox) * p(SW) - p(PL);
    for (var ic = 0u; ic < cg; ic++) {
        let xb = pu(X_OFF) + (n * c + grp * cg + ic) * u32(h * w);
        let wb = pu(W_OFF) + (oc * cg + ic) * kh * kw;
        for (var ky = 0u; ky < kh; ky++) {
            let iy = iy0 + i32(ky) * p(DH);
            if (iy < 0 || iy >= h) {
                continue;
            }
            for (var kx = 0u; kx < kw; kx++) {
                let ix = ix0 + i32(kx) * p(DW);
                if (ix < 0 || ix >= w) {
                    continue;
                }
                let xv = arena_i8(xb + u32(iy * w + ix)) - zx;
                acc += xv * weight_i8(wb + ky * kw + kx);
            }
        }
    }
    return requantize(acc, weight_f32(pu(S_OFF) + 4u * oc), p(ZY), p(LO), p(HI));
}

@compute @workgroup_size(64)
fn conv(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let word = word_index(gid, nwg);
    let numel = pu(NUMEL);
    if (word * 4u >= numel) {
        return;
    }
    var packed = 0u;
    for (var j = 0u; j < 4u; j++) {
        let e = word * 4u + j;
        if (e < numel) {
            packed |= (u32(conv_one(e)) & 0xffu) << (8u * j);
        }
    }
    store(word, packed);
}

// FullyConnected: y[i, j] = requantize(b[j] + Σk (x[i, k] − zx) · w[j, k]).
fn fc_one(e: u32) -> i32 {
    let n = pu(N);
    let k = pu(K);
    let i = e / n;
    let j = e % n;
    var acc = 0;
    if (p(B_OFF) >= 0) {
        acc = weight_i32(pu(B_OFF) + 4u * j);
    }
    let xb = pu(X_OFF) + i * k;
    let wb = pu(W_OFF) + j * k;
    acc += fc_dot(xb, wb, k);
    return requantize(acc, weight_f32(pu(S_OFF) + 4u * j), p(ZY), p(LO), p(HI));
}

@compute @workgroup_size(64)
fn fc(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let word = word_index(gid, nwg);
    let numel = pu(NUMEL);
    if (word * 4u >= numel) {
        return;
    }
    var packed = 0u;
    for (var j = 0u; j < 4u; j++) {
        let e = word * 4u + j;
        if (e < numel) {
            packed |= (u32(fc_one(e)) & 0xffu) << (8u * j);
        }
    }
    store(word, packed);
}

// Lookup table: one table of 256 per tensor (N = 1) or per channel (N channels of K
// elements each).
@compute @workgroup_size(64)
fn lut(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let word = word_index(gid, nwg);
    let numel = pu(NUMEL);
    if (word * 4u >= numel) {
        return;
    }
    var packed = 0u;
    for (var j = 0u; j < 4u; j++) {
        let e = word * 4u + j;
        if (e < numel) {
            let v = arena_i8(pu(X_OFF) + e);
            let ch = (e / max(pu(K), 1u)) % max(pu(N), 1u);
            let q = weight_i8(pu(W_OFF) + ch * 256u + u32(v + 128));
            packed |= (u32(q) & 0xffu) << (8u * j);
        }
    }
    store(word, packed);
}

// MaxPool on raw int8 values (input and output share quantization).
fn maxpool_one(e: u32) -> i32 {
    let ow = pu(OW);
    let oh = pu(OH);
    let ox = e % ow;
    let oy = (e / ow) % oh;
    let plane = e / (ow * oh);
    let h = p(H);
    let w = p(W);
    var m = -128;
    for (var ky = 0; ky < p(KH); ky++) {
        let iy = i32(oy) * p(SH) - p(PT) + ky * p(DH);
        if (iy < 0 || iy >= h) {
            continue;
        }
        for (var kx = 0; kx < p(KW); kx++) {
            let ix = i32(ox) * p(SW) - p(PL) + kx * p(DW);
            if (ix >= 0 && ix < w) {
                m = max(m, arena_i8(pu(X_OFF) + plane * u32(h * w) + u32(iy * w + ix)));
            }
        }
    }
    return m;
}

@compute @workgroup_size(64)
fn maxpool(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let word = word_index(gid, nwg);
    let numel = pu(NUMEL);
    if (word * 4u >= numel) {
        return;
    }
    var packed = 0u;
    for (var j = 0u; j < 4u; j++) {
        let e = word * 4u + j;
        if (e < numel) {
            packed |= (u32(maxpool_one(e)) & 0xffu) << (8u * j);
        }
    }
    store(word, packed);
}

// ----- element-wise Add and Mul (broadcast over up to four axes) -----
// Each op's result for every pair of int8 operands is a 256×256 table that the reference
// kernel itself computed when the accelerator was created (QLinearAdd's fused multiply-add
// has no exact WGSL form: fma() may be unfused, and is on lavapipe), so the lookup is the
// reference's value by construction.
const D0 = 10u;
const SA0 = 14u;
const SB0 = 18u;
const TABLE = 22u;
const F0 = 23u;

fn pf(i: u32) -> f32 {
    return bitcast<f32>(p(i));
}

fn binary_one(e: u32) -> i32 {
    var rest = e;
    var ia = 0u;
    var ib = 0u;
    for (var d = 3; d >= 0; d--) {
        let n = pu(D0 + u32(d));
        let i = rest % n;
        rest = rest / n;
        ia += i * pu(SA0 + u32(d));
        ib += i * pu(SB0 + u32(d));
    }
    let av = arena_i8(pu(X_OFF) + ia);
    let bv = arena_i8(pu(W_OFF) + ib);
    return weight_i8(pu(TABLE) + u32(av + 128) * 256u + u32(bv + 128));
}

@compute @workgroup_size(64)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let word = word_index(gid, nwg);
    let numel = pu(NUMEL);
    if (word * 4u >= numel) {
        return;
    }
    var packed = 0u;
    for (var j = 0u; j < 4u; j++) {
        let e = word * 4u + j;
        if (e < numel) {
            packed |= (u32(binary_one(e)) & 0xffu) << (8u * j);
        }
    }
    store(word, packed);
}

// ----- GlobalAveragePool: the mean of each run of K elements, as reduce_mean_i8 -----
fn gap_one(e: u32) -> i32 {
    let count = pu(K);
    let zx = p(ZX);
    let zy = p(ZY);
    var acc = 0;
    for (var i = 0u; i < count; i++) {
        acc += arena_i8(pu(X_OFF) + e * count + i) - zx;
    }
    var v = f32(acc) * pf(F0);
    v = min(max(v, f32(-128 - zy)), f32(127 - zy));
    return i32(round(v)) + zy;
}

@compute @workgroup_size(64)
fn gap(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let word = word_index(gid, nwg);
    let numel = pu(NUMEL);
    if (word * 4u >= numel) {
        return;
    }
    var packed = 0u;
    for (var j = 0u; j < 4u; j++) {
        let e = word * 4u + j;
        if (e < numel) {
            packed |= (u32(gap_one(e)) & 0xffu) << (8u * j);
        }
    }
    store(word, packed);
}

// ----- Reshape: the same bytes (a word at a time; both tensors start 16-aligned) -----
@compute @workgroup_size(64)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let word = word_index(gid, nwg);
    if (word * 4u >= pu(NUMEL)) {
        return;
    }
    store(word, arena[(pu(X_OFF) >> 2u) + word]);
}

// Data movement (Concat, Transpose, Slice, Tile, Gather with fixed indices, nearest
// Resize): the weights hold each output
// element's source byte in the arena (u32, at W_OFF) and, when an input is requantized,
// each element's input (a byte, at K) and one 256-byte table per input (at TABLE; -1 when
// every input keeps the output's quantization).
@compute @workgroup_size(64)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let word = word_index(gid, nwg);
    let numel = pu(NUMEL);
    if (word * 4u >= numel) {
        return;
    }
    var packed = 0u;
    for (var j = 0u; j < 4u; j++) {
        let e = word * 4u + j;
        if (e < numel) {
            var v = arena_i8(weights[(pu(W_OFF) >> 2u) + e]);
            if (p(TABLE) >= 0) {
                let k = u32(weight_i8(pu(K) + e)) & 0xffu;
                v = weight_i8(pu(TABLE) + k * 256u + u32(v + 128));
            }
            packed |= (u32(v) & 0xffu) << (8u * j);
        }
    }
    store(word, packed);
}

// ----- exact f32 arithmetic in integers (see exact.rs) -----
// WGSL's f32 division is not correctly rounded and a multiply followed by an add may be
// contracted into a fused multiply-add; these give IEEE 754's results (round to nearest,
// ties to even, gradual underflow) for finite operands whose result is finite.

// Round a magnitude with three extra low bits (guard, round, sticky) and pack it with
// biased exponent `biased` (below 1: subnormal). `m` is in [2^26, 2^27) unless the value
// is subnormal.
fn round_pack(m_in: u32, biased: i32) -> u32 {
    var m = m_in;
    var e = biased;
    if (e < 1) {
        let s = u32(1 - e);
        if (s > 26u) {
            m = select(0u, 1u, m != 0u);
        } else {
            m = (m >> s) | select(0u, 1u, (m & ((1u << s) - 1u)) != 0u);
        }
        e = 1;
    }
    let low = m & 7u;
    m = m >> 3u;
    if (low > 4u || (low == 4u && (m & 1u) == 1u)) {
        m += 1u;
    }
    // A carry out of the mantissa lands in the exponent, as it should.
    return (u32(e - 1) << 23u) + m;
}

// Mantissa with its implicit bit (none for a subnormal) and the exponent as used (1 for
// a subnormal).
fn unpack_f32(b: u32) -> vec2<u32> {
    let e = (b >> 23u) & 0xffu;
    return vec2<u32>(select(0u, 0x800000u, e != 0u) | (b & 0x7fffffu), max(e, 1u));
}

fn f32_add(a: u32, b: u32) -> u32 {
    let a_abs = a & 0x7fffffffu;
    let b_abs = b & 0x7fffffffu;
    if (b_abs == 0u) {
        // x + 0 = x, and −0 + +0 = +0.
        return select(a, a & b, a_abs == 0u);
    }
    if (a_abs == 0u) {
        return b;
    }
    var big = a;
    var small = b;
    if (b_abs > a_abs) {
        big = b;
        small = a;
    }
    let ub = unpack_f32(big);
    let us = unpack_f32(small);
    let mbig = ub.x << 3u;
    var msmall = us.x << 3u;
    let d = ub.y - us.y;
    if (d > 26u) {
        msmall = 1u;
    } else if (d > 0u) {
        msmall = (msmall >> d) | select(0u, 1u, (msmall & ((1u << d) - 1u)) != 0u);
    }
    var e = i32(ub.y);
    var m = 0u;
    if (((a ^ b) & 0x80000000u) == 0u) {
        m = mbig + msmall;
        if (m >= (1u << 27u)) {
            m = (m >> 1u) | (m & 1u);
            e += 1;
        }
    } else {
        m = mbig - msmall;
        if (m == 0u) {
            return 0u;
        }
        while (m < (1u << 26u) && e > 1) {
            m = m << 1u;
            e -= 1;
        }
    }
    return (big & 0x80000000u) | round_pack(m, e);
}

// a / b for a ≥ +0 and b > 0.
fn f32_div(a: u32, b: u32) -> u32 {
    if ((a & 0x7fffffffu) == 0u) {
        return 0u;
    }
    let ua = unpack_f32(a);
    let ub = unpack_f32(b);
    var ma = ua.x;
    var mb = ub.x;
    var e = i32(ua.y) - i32(ub.y) + 127;
    // Normalise both (subnormals), then make ma / mb lie in [1, 2).
    while (ma < 0x800000u) {
        ma = ma << 1u;
        e -= 1;
    }
    while (mb < 0x800000u) {
        mb = mb << 1u;
        e += 1;
    }
    if (ma < mb) {
        ma = ma << 1u;
        e -= 1;
    }
    // 26 quotient bits (the first is 1), then a sticky bit from the remainder.
    var q = 0u;
    var rem = ma;
    for (var i = 0u; i < 26u; i++) {
        q = q << 1u;
        if (rem >= mb) {
            rem -= mb;
            q |= 1u;
        }
        rem = rem << 1u;
    }
    return round_pack((q << 1u) | select(0u, 1u, rem != 0u), e);
}

// f32 bits as a key that orders like the value (exact.rs `key`).
fn f32_key(b: u32) -> u32 {
    return select(b | 0x80000000u, ~b, (b >> 31u) == 1u);
}

// −128 plus the number of the op's 255 ascending thresholds (word `at`) at or below `k`:
// quantize_f32 of the value whose key is `k`.
fn level(at: u32, k: u32) -> i32 {
    var lo = 0u;
    var hi = 255u;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (weights[at + mid] <= k) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return i32(lo) - 128;
}

// ----- int8 Softmax (flavour 0): per row of N elements K apart -----
// m = max x; sum = Σ E[m − x] in element order (f32 adds); y = level(E[m − x] / sum).
// E (at TABLE) is the reference's expf table times 2^64, every entry normal or zero;
// the thresholds are at W_OFF.
@compute @workgroup_size(64)
fn softmax(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let word = word_index(gid, nwg);
    let numel = pu(NUMEL);
    if (word * 4u >= numel) {
        return;
    }
    let n = pu(N);
    let inner = pu(K);
    let table = pu(TABLE) >> 2u;
    var row = 0xffffffffu;
    var m = -128;
    var sum = 0.0;
    var packed = 0u;
    for (var j = 0u; j < 4u; j++) {
        let e = word * 4u + j;
        if (e < numel) {
            let row_start = pu(X_OFF) + (e / (inner * n)) * n * inner + e % inner;
            if (row_start != row) {
                row = row_start;
                m = -128;
                for (var k = 0u; k < n; k++) {
                    m = max(m, arena_i8(row_start + k * inner));
                }
                sum = 0.0;
                for (var k = 0u; k < n; k++) {
                    sum = sum + bitcast<f32>(weights[table + u32(m - arena_i8(row_start + k * inner))]);
                }
            }
            let ev = weights[table + u32(m - arena_i8(pu(X_OFF) + e))];
            let q = level(pu(W_OFF) >> 2u, f32_key(f32_div(ev, bitcast<u32>(sum))));
            packed |= (u32(q) & 0xffu) << (8u * j);
        }
    }
    store(word, packed);
}

// ----- bilinear Resize (NCHW) -----
// Taps at W_OFF: per output row then per output column, four words (first, second,
// weight of first, weight of second); thresholds at TABLE; x's zero point at ZX and scale
// at F0. The reference's products in its order, added exactly.
fn bilinear_one(e: u32) -> i32 {
    let ow = pu(OW);
    let oh = pu(OH);
    let w = pu(W);
    let ox = e % ow;
    let oy = (e / ow) % oh;
    let plane = e / (ow * oh);
    let ty = (pu(W_OFF) >> 2u) + 4u * oy;
    let tx = (pu(W_OFF) >> 2u) + 4u * (oh + ox);
    let base = pu(X_OFF) + plane * pu(H) * w;
    let r0 = base + weights[ty] * w;
    let r1 = base + weights[ty + 1u] * w;
    let x0 = weights[tx];
    let x1 = weights[tx + 1u];
    let wy0 = bitcast<f32>(weights[ty + 2u]);
    let wy1 = bitcast<f32>(weights[ty + 3u]);
    let wx0 = bitcast<f32>(weights[tx + 2u]);
    let wx1 = bitcast<f32>(weights[tx + 3u]);
    let zx = p(ZX);
    let sx = pf(F0);
    let p00 = bitcast<u32>(f32(arena_i8(r0 + x0) - zx) * sx * wy0 * wx0);
    let p01 = bitcast<u32>(f32(arena_i8(r0 + x1) - zx) * sx * wy0 * wx1);
    let p10 = bitcast<u32>(f32(arena_i8(r1 + x0) - zx) * sx * wy1 * wx0);
    let p11 = bitcast<u32>(f32(arena_i8(r1 + x1) - zx) * sx * wy1 * wx1);
    let r = f32_add(f32_add(f32_add(p00, p01), p10), p11);
    return level(pu(TABLE) >> 2u, f32_key(r));
}

@compute @workgroup_size(64)
fn bilinear(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let word = word_index(gid, nwg);
    let numel = pu(NUMEL);
    if (word * 4u >= numel) {
        return;
    }
    var packed = 0u;
    for (var j = 0u; j < 4u; j++) {
        let e = word * 4u + j;
        if (e < numel) {
            packed |= (u32(bilinear_one(e)) & 0xffu) << (8u * j);
        }
    }
    store(word, packed);
}

// BatchMatMul of two int8 activations (gemm::bmm_i8): y[o, i, j] = requantize(Σt (a[i, t]
// − za) · (b[t, j] − zb)) with both matrices in the arena, wrapping i32 accumulation and
// the full int8 range. Rows of a at M, K; columns of b at N; b's zero point at C; at TABLE,
// per output batch o, the element offsets of its a and b matrices (broadcast).
fn bmm_one(e: u32) -> i32 {
    let m = pu(H);
    let k = pu(K);
    let n = pu(N);
    let j = e % n;
    let i = (e / n) % m;
    let o = e / (m * n);
    let t = (pu(TABLE) >> 2u) + 2u * o;
    let ab = pu(X_OFF) + weights[t] + i * k;
    let bb = pu(W_OFF) + weights[t + 1u] + j;
    let za = p(ZX);
    let zb = p(C);
    var acc = 0;
    for (var tt = 0u; tt < k; tt++) {
        acc += (arena_i8(ab + tt) - za) * (arena_i8(bb + tt * n) - zb);
    }
    return requantize(acc, weight_f32(pu(S_OFF)), p(ZY), -128, 127);
}

@compute @workgroup_size(64)
fn bmm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let word = word_index(gid, nwg);
    let numel = pu(NUMEL);
    if (word * 4u >= numel) {
        return;
    }
    var packed = 0u;
    for (var j = 0u; j < 4u; j++) {
        let e = word * 4u + j;
        if (e < numel) {
            packed |= (u32(bmm_one(e)) & 0xffu) << (8u * j);
        }
    }
    store(word, packed);
}
