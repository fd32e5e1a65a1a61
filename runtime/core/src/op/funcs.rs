//! Function codes of the `Unary`, `Binary` and `Reduce` kinds (their param word 0).

/// Element-wise functions of the `Binary` op. Arithmetic functions read and write f32;
/// comparisons read two f32 or two i32 operands and write i32 0/1; logic functions read
/// and write i32 (0 is false, anything else true; results are 0/1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(i32)]
pub enum BinaryFn {
    Pow = 0,
    Max = 1,
    Min = 2,
    Equal = 3,
    Less = 4,
    LessOrEqual = 5,
    Greater = 6,
    GreaterOrEqual = 7,
    And = 8,
    Or = 9,
    Xor = 10,
    /// The remainder with the divisor's sign (Python's `%`, ONNX Mod with fmod = 0).
    Mod = 11,
    /// The remainder with the dividend's sign (C's `fmod`, ONNX Mod with fmod = 1).
    Fmod = 12,
}

impl BinaryFn {
    pub const fn from_code(c: i32) -> Option<BinaryFn> {
        use BinaryFn::*;
        Some(match c {
            0 => Pow,
            1 => Max,
            2 => Min,
            3 => Equal,
            4 => Less,
            5 => LessOrEqual,
            6 => Greater,
            7 => GreaterOrEqual,
            8 => And,
            9 => Or,
            10 => Xor,
            11 => Mod,
            12 => Fmod,
            _ => return None,
        })
    }

    /// Pow, Max, Min, Mod, Fmod: f32 operands and result.
    pub const fn is_arithmetic(self) -> bool {
        matches!(
            self,
            BinaryFn::Pow | BinaryFn::Max | BinaryFn::Min | BinaryFn::Mod | BinaryFn::Fmod
        )
    }

    /// And, Or, Xor: i32 operands and result.
    pub const fn is_logic(self) -> bool {
        matches!(self, BinaryFn::And | BinaryFn::Or | BinaryFn::Xor)
    }
}

/// Reductions of the `Reduce` op. Params: `[fn, axes mask, keepdims, select_last_index]`.
/// ArgMax/ArgMin reduce exactly one axis and write i32 indices; the others write f32.
/// An empty reduction gives the function's identity (0, 1, −∞ for Max and the logs, +∞
/// for Min). TopK and TopKIndex select along one axis instead: params
/// `[fn, axis mask, k, largest 1 / smallest 0]`, the axis becomes k long, sorted (ties:
/// the lower index first); TopK writes the f32 values, TopKIndex their i32 indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(i32)]
pub enum ReduceFn {
    Sum = 0,
    Max = 1,
    Min = 2,
    Prod = 3,
    L1 = 4,
    L2 = 5,
    LogSum = 6,
    LogSumExp = 7,
    SumSquare = 8,
    ArgMax = 9,
    ArgMin = 10,
    TopK = 11,
    TopKIndex = 12,
}

impl ReduceFn {
    pub const fn from_code(c: i32) -> Option<ReduceFn> {
        use ReduceFn::*;
        Some(match c {
            0 => Sum,
            1 => Max,
            2 => Min,
            3 => Prod,
            4 => L1,
            5 => L2,
            6 => LogSum,
            7 => LogSumExp,
            8 => SumSquare,
            9 => ArgMax,
            10 => ArgMin,
            11 => TopK,
            12 => TopKIndex,
            _ => return None,
        })
    }

    /// ArgMax, ArgMin: one axis, i32 indices out.
    pub const fn is_arg(self) -> bool {
        matches!(self, ReduceFn::ArgMax | ReduceFn::ArgMin)
    }

    /// TopK, TopKIndex: one axis that becomes k long.
    pub const fn is_top_k(self) -> bool {
        matches!(self, ReduceFn::TopK | ReduceFn::TopKIndex)
    }

    /// The functions that write i32 indices.
    pub const fn writes_indices(self) -> bool {
        matches!(
            self,
            ReduceFn::ArgMax | ReduceFn::ArgMin | ReduceFn::TopKIndex
        )
    }
}

/// Element-wise functions of the f32 `Unary` op (param word 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(i32)]
pub enum UnaryFn {
    Identity = 0,
    Relu = 1,
    /// a = min, b = max
    Clip = 2,
    /// a = alpha
    LeakyRelu = 3,
    Sigmoid = 4,
    /// a = alpha, b = beta
    HardSigmoid = 5,
    HardSwish = 6,
    Tanh = 7,
    Gelu = 8,
    GeluTanh = 9,
    Erf = 10,
    Exp = 11,
    Neg = 12,
    Abs = 13,
    Sqrt = 14,
    Reciprocal = 15,
    Log = 16,
    Sin = 17,
    Cos = 18,
    /// x^a (a = the constant exponent)
    Pow = 19,
    Tan = 20,
    Floor = 21,
    Ceil = 22,
    /// Round half to even.
    Round = 23,
    Sign = 24,
    Softplus = 25,
    /// a = alpha
    Elu = 26,
    /// a = alpha, b = gamma
    Selu = 27,
    Mish = 28,
    Softsign = 29,
    /// a = alpha
    ThresholdedRelu = 30,
    /// a = alpha
    Celu = 31,
    /// a = lambd, b = bias
    Shrink = 32,
    Acos = 33,
    Asin = 34,
    Atan = 35,
    Sinh = 36,
    Cosh = 37,
    Asinh = 38,
    Acosh = 39,
    /// x · HardSigmoid(x) = x · clamp(a·x + b, 0, 1), for any a, b (the converter fuses
    /// `Mul(x, HardSigmoid(x))`; HardSwish is the case a = 1/6, b = 1/2).
    HardSwishAB = 40,
    /// x · Sigmoid(x) (SiLU / Swish; the converter fuses `Mul(x, Sigmoid(x))`).
    Silu = 41,
}

impl UnaryFn {
    pub const fn from_code(c: i32) -> Option<UnaryFn> {
        use UnaryFn::*;
        Some(match c {
            0 => Identity,
            1 => Relu,
            2 => Clip,
            3 => LeakyRelu,
            4 => Sigmoid,
            5 => HardSigmoid,
            6 => HardSwish,
            7 => Tanh,
            8 => Gelu,
            9 => GeluTanh,
            10 => Erf,
            11 => Exp,
            12 => Neg,
            13 => Abs,
            14 => Sqrt,
            15 => Reciprocal,
            16 => Log,
            17 => Sin,
            18 => Cos,
            19 => Pow,
            20 => Tan,
            21 => Floor,
            22 => Ceil,
            23 => Round,
            24 => Sign,
            25 => Softplus,
            26 => Elu,
            27 => Selu,
            28 => Mish,
            29 => Softsign,
            30 => ThresholdedRelu,
            31 => Celu,
            32 => Shrink,
            33 => Acos,
            34 => Asin,
            35 => Atan,
            36 => Sinh,
            37 => Cosh,
            38 => Asinh,
            39 => Acosh,
            40 => HardSwishAB,
            41 => Silu,
            _ => return None,
        })
    }
}
