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
