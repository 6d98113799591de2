//! The math library: primitive ops and storage formats expanded into kernel-IR expressions.
//!
//! Cranelift has no `exp`, `log` or `sin`, and the runtime holds no math kernels, so every
//! transcendental is a polynomial built here from adds, multiplies, bit casts and selects. Because
//! the expansion is ordinary kernel IR, it is vectorised, hoisted and fused like anything else.
//! f32 functions use Cephes-style minimax polynomials (a few ulp); f64 functions use longer
//! polynomials or series. Narrow storage formats (f16, bf16, float8, float4, packed ints) are
//! decoded to and encoded from their compute types with integer bit manipulation.

use crate::kernel::{KBinary, KUnary, KernelBuilder, E};
use odc_ir::{BinaryOp, DType, UnaryOp};

/// Float arithmetic on one type (f32 or f64), for readable expansions.
struct F<'a> {
    kb: &'a mut KernelBuilder,
    t: DType,
}

impl<'a> F<'a> {
    fn new(kb: &'a mut KernelBuilder, t: DType) -> Self {
        F { kb, t }
    }
    fn c(&mut self, v: f64) -> E {
        self.kb.fconst(self.t, v)
    }
    fn add(&mut self, a: E, b: E) -> E {
        self.kb.binary(KBinary::Add, a, b)
    }
    fn sub(&mut self, a: E, b: E) -> E {
        self.kb.binary(KBinary::Sub, a, b)
    }
    fn mul(&mut self, a: E, b: E) -> E {
        self.kb.binary(KBinary::Mul, a, b)
    }
    fn div(&mut self, a: E, b: E) -> E {
        self.kb.binary(KBinary::Div, a, b)
    }
    fn mulc(&mut self, a: E, c: f64) -> E {
        let c = self.c(c);
        self.mul(a, c)
    }
    fn addc(&mut self, a: E, c: f64) -> E {
        let c = self.c(c);
        self.add(a, c)
    }
    fn neg(&mut self, a: E) -> E {
        self.kb.unary(KUnary::Neg, a)
    }
    fn abs(&mut self, a: E) -> E {
        self.kb.unary(KUnary::Abs, a)
    }
    fn sqrt(&mut self, a: E) -> E {
        self.kb.unary(KUnary::Sqrt, a)
    }
    fn floor(&mut self, a: E) -> E {
        self.kb.unary(KUnary::Floor, a)
    }
    fn nearest(&mut self, a: E) -> E {
        self.kb.unary(KUnary::Nearest, a)
    }
    fn sel(&mut self, c: E, a: E, b: E) -> E {
        self.kb.select(c, a, b)
    }
    fn cmp(&mut self, op: KBinary, a: E, b: E) -> E {
        self.kb.binary(op, a, b)
    }
    fn cmpc(&mut self, op: KBinary, a: E, c: f64) -> E {
        let c = self.c(c);
        self.cmp(op, a, c)
    }
    fn min(&mut self, a: E, b: E) -> E {
        self.kb.binary(KBinary::Min, a, b)
    }
    fn max(&mut self, a: E, b: E) -> E {
        self.kb.binary(KBinary::Max, a, b)
    }
    /// Horner evaluation of `coeffs[0] * x^n + ... + coeffs[n]`.
    fn poly(&mut self, x: E, coeffs: &[f64]) -> E {
        let mut acc = self.c(coeffs[0]);
        for &c in &coeffs[1..] {
            let cc = self.c(c);
            acc = self.kb.fma(acc, x, cc);
        }
        acc
    }
    fn is_nan(&mut self, x: E) -> E {
        self.cmp(KBinary::Ne, x, x)
    }
    /// Copy the sign of `s` onto `m` (via select; `m` is non-negative).
    fn with_sign_of(&mut self, m: E, s: E) -> E {
        let neg = self.cmpc(KBinary::Lt, s, 0.0);
        let nm = self.neg(m);
        self.sel(neg, nm, m)
    }
    /// The integer bit-pattern type of this float type.
    fn int_t(&self) -> DType {
        if self.t == DType::F32 {
            DType::I32
        } else {
            DType::I64
        }
    }
    /// 2^n for an integral-valued float `n` in the normal exponent range.
    fn exp2_int(&mut self, n: E) -> E {
        let it = self.int_t();
        let (bias, shift) = if self.t == DType::F32 { (127, 23) } else { (1023, 52) };
        let ni = self.kb.convert(it, n);
        let b = self.kb.iconst(it, bias);
        let e = self.kb.add(ni, b);
        let s = self.kb.iconst(it, shift);
        let bits = self.kb.binary(KBinary::Shl, e, s);
        self.kb.bitcast(self.t, bits)
    }
}

// ---------------------------------------------------------------------------------------------
// Elementwise primitives
// ---------------------------------------------------------------------------------------------

/// `op(x)` where `x` has storage dtype `dt` (and so compute type `dt.compute_type()`).
pub fn unary(kb: &mut KernelBuilder, op: UnaryOp, x: E, dt: DType) -> E {
    let ct = dt.compute_type();
    let r = match op {
        UnaryOp::Neg => kb.unary(KUnary::Neg, x),
        UnaryOp::Abs => kb.unary(KUnary::Abs, x),
        UnaryOp::Sign => {
            let zero = kb.constant(ct, 0.0);
            let one = kb.constant(ct, 1.0);
            let gt = kb.binary(KBinary::Gt, x, zero);
            if ct.is_unsigned_int() {
                kb.select(gt, one, zero)
            } else {
                let m1 = kb.constant(ct, -1.0);
                let lt = kb.binary(KBinary::Lt, x, zero);
                let neg_or_x = kb.select(lt, m1, if ct.is_float() { x } else { zero });
                kb.select(gt, one, neg_or_x)
            }
        }
        UnaryOp::Sqrt => kb.unary(KUnary::Sqrt, x),
        UnaryOp::Recip => {
            let one = kb.constant(ct, 1.0);
            kb.binary(KBinary::Div, one, x)
        }
        UnaryOp::Floor => kb.unary(KUnary::Floor, x),
        UnaryOp::Ceil => kb.unary(KUnary::Ceil, x),
        UnaryOp::Round => kb.unary(KUnary::Nearest, x),
        UnaryOp::Exp => exp(kb, x),
        UnaryOp::Log => log(kb, x),
        UnaryOp::Sin => sin_cos(kb, x, false),
        UnaryOp::Cos => sin_cos(kb, x, true),
        UnaryOp::Tan => {
            let s = sin_cos(kb, x, false);
            let c = sin_cos(kb, x, true);
            kb.binary(KBinary::Div, s, c)
        }
        UnaryOp::Atan => atan(kb, x),
        UnaryOp::Asin => {
            // atan(x / sqrt((1 - x)(1 + x)))
            let mut f = F::new(kb, ct);
            let one = f.c(1.0);
            let a = f.sub(one, x);
            let b = f.add(one, x);
            let p = f.mul(a, b);
            let s = f.sqrt(p);
            let q = f.div(x, s);
            atan(kb, q)
        }
        UnaryOp::Acos => {
            // 2 atan(sqrt((1 - x) / (1 + x)))
            let mut f = F::new(kb, ct);
            let one = f.c(1.0);
            let a = f.sub(one, x);
            let b = f.add(one, x);
            let q = f.div(a, b);
            let s = f.sqrt(q);
            let t = atan(kb, s);
            let mut f = F::new(kb, ct);
            f.mulc(t, 2.0)
        }
        UnaryOp::Sinh => sinh(kb, x),
        UnaryOp::Cosh => {
            let ex = exp(kb, x);
            let mut f = F::new(kb, ct);
            let nx = f.neg(x);
            let emx = exp(f.kb, nx);
            let mut f = F::new(kb, ct);
            let s = f.add(ex, emx);
            f.mulc(s, 0.5)
        }
        UnaryOp::Tanh => tanh(kb, x),
        UnaryOp::Asinh => {
            // sign(x) * log1p(|x| + x^2 / (1 + sqrt(1 + x^2))), or log(2|x|) when x^2 overflows
            let mut f = F::new(kb, ct);
            let a = f.abs(x);
            let x2 = f.mul(a, a);
            let one = f.c(1.0);
            let t = f.add(one, x2);
            let s = f.sqrt(t);
            let d = f.add(one, s);
            let q = f.div(x2, d);
            let u = f.add(a, q);
            let small = log1p(kb, u);
            let mut f = F::new(kb, ct);
            let two_a = f.mulc(a, 2.0);
            let large = log(f.kb, two_a);
            let mut f = F::new(kb, ct);
            let big = f.cmpc(KBinary::Gt, a, if ct == DType::F32 { 1e9 } else { 1e150 });
            let m = f.sel(big, large, small);
            f.with_sign_of(m, x)
        }
        UnaryOp::Acosh => {
            // log1p(t + sqrt(2t + t^2)), t = x - 1
            let mut f = F::new(kb, ct);
            let t = f.addc(x, -1.0);
            let t2 = f.mul(t, t);
            let two_t = f.mulc(t, 2.0);
            let s = f.add(two_t, t2);
            let r = f.sqrt(s);
            let u = f.add(t, r);
            let small = log1p(kb, u);
            let mut f = F::new(kb, ct);
            let two_x = f.mulc(x, 2.0);
            let large = log(f.kb, two_x);
            let mut f = F::new(kb, ct);
            let big = f.cmpc(KBinary::Gt, x, if ct == DType::F32 { 1e9 } else { 1e150 });
            f.sel(big, large, small)
        }
        UnaryOp::Atanh => {
            // 0.5 * (log1p(x) - log1p(-x)): both arguments are exact, unlike 2x / (1 - x)
            let a = log1p(kb, x);
            let nx = kb.unary(KUnary::Neg, x);
            let b = log1p(kb, nx);
            let mut f = F::new(kb, ct);
            let d = f.sub(a, b);
            f.mulc(d, 0.5)
        }
        UnaryOp::Erf => erf(kb, x),
        UnaryOp::Not | UnaryOp::BitNot => kb.unary(KUnary::Not, x),
        UnaryOp::IsNan => kb.binary(KBinary::Ne, x, x),
        UnaryOp::IsPosInf => {
            let inf = kb.constant(ct, f64::INFINITY);
            kb.binary(KBinary::Eq, x, inf)
        }
        UnaryOp::IsNegInf => {
            let inf = kb.constant(ct, f64::NEG_INFINITY);
            kb.binary(KBinary::Eq, x, inf)
        }
    };
    if op.returns_bool() {
        r
    } else {
        round_to_storage(kb, r, dt)
    }
}

/// `op(a, b)` for operands of storage dtype `dt`.
pub fn binary(kb: &mut KernelBuilder, op: BinaryOp, a: E, b: E, dt: DType) -> E {
    let k = match op {
        BinaryOp::Add => KBinary::Add,
        BinaryOp::Sub => KBinary::Sub,
        BinaryOp::Mul => KBinary::Mul,
        BinaryOp::Div => KBinary::Div,
        BinaryOp::Rem => KBinary::Rem,
        BinaryOp::Max => KBinary::Max,
        BinaryOp::Min => KBinary::Min,
        BinaryOp::And | BinaryOp::BitAnd => KBinary::And,
        BinaryOp::Or | BinaryOp::BitOr => KBinary::Or,
        BinaryOp::Xor | BinaryOp::BitXor => KBinary::Xor,
        BinaryOp::Shl => KBinary::Shl,
        BinaryOp::Shr => KBinary::Shr,
        BinaryOp::Eq => KBinary::Eq,
        BinaryOp::Lt => KBinary::Lt,
        BinaryOp::Le => KBinary::Le,
        BinaryOp::Gt => KBinary::Gt,
        BinaryOp::Ge => KBinary::Ge,
        BinaryOp::Pow => {
            let r = pow(kb, a, b, dt.compute_type());
            return round_to_storage(kb, r, dt);
        }
    };
    let r = kb.binary(k, a, b);
    if op.returns_bool() {
        r
    } else {
        round_to_storage(kb, r, dt)
    }
}

// ---------------------------------------------------------------------------------------------
// Transcendentals
// ---------------------------------------------------------------------------------------------

/// e^x.
pub fn exp(kb: &mut KernelBuilder, x: E) -> E {
    let t = kb.ty(x);
    let mut f = F::new(kb, t);
    let (hi_lim, lo_lim, ln2_hi, ln2_lo, coeffs): (f64, f64, f64, f64, &[f64]) = if t == DType::F32 {
        (
            88.722_839_355_468_75,
            -103.972_084,
            0.693_359_375,
            -2.121_944_400_546_905_8e-4,
            &[1.987_569_150_0e-4, 1.398_199_950_7e-3, 8.333_451_907_3e-3, 4.166_579_589_4e-2, 1.666_666_545_9e-1, 5.000_000_120_1e-1],
        )
    } else {
        (
            709.782_712_893_384,
            -745.133_219_101_941_1,
            6.931_471_803_691_238_164_9e-1,
            1.908_214_929_270_587_700_02e-10,
            &[
                1.0 / 6_227_020_800.0,
                1.0 / 479_001_600.0,
                1.0 / 39_916_800.0,
                1.0 / 3_628_800.0,
                1.0 / 362_880.0,
                1.0 / 40_320.0,
                1.0 / 5_040.0,
                1.0 / 720.0,
                1.0 / 120.0,
                1.0 / 24.0,
                1.0 / 6.0,
                0.5,
            ],
        )
    };
    // Clamp so the exponent construction below stays in range; overflow/underflow fixed after.
    let lo = f.c(lo_lim - 1.0);
    let hi = f.c(hi_lim + 1.0);
    let xc = f.max(x, lo);
    let xc = f.min(xc, hi);
    let l2e = f.mulc(xc, std::f64::consts::LOG2_E);
    let n = f.nearest(l2e);
    let a = f.mulc(n, ln2_hi);
    let r = f.sub(xc, a);
    let b = f.mulc(n, ln2_lo);
    let r = f.sub(r, b);
    let p = f.poly(r, coeffs);
    let r2 = f.mul(r, r);
    let one = f.c(1.0);
    let p = if t == DType::F32 {
        // 1 + r + r^2 * P(r)
        let q = f.mul(r2, p);
        let s = f.add(q, r);
        f.add(s, one)
    } else {
        // Taylor: 1 + r + r^2 * (1/2 + r/6 + ...)
        let q = f.mul(r2, p);
        let s = f.add(q, r);
        f.add(s, one)
    };
    // Scale by 2^n in two halves so subnormal results come out right.
    let half = f.mulc(n, 0.5);
    let n1 = f.floor(half);
    let n2 = f.sub(n, n1);
    let s1 = f.exp2_int(n1);
    let s2 = f.exp2_int(n2);
    let y = f.mul(p, s1);
    let y = f.mul(y, s2);
    let over = f.cmpc(KBinary::Gt, x, hi_lim);
    let under = f.cmpc(KBinary::Lt, x, lo_lim);
    let inf = f.c(f64::INFINITY);
    let zero = f.c(0.0);
    let y = f.sel(over, inf, y);
    let y = f.sel(under, zero, y);
    let nan = f.is_nan(x);
    f.sel(nan, x, y)
}

/// Split a positive finite float into `(m, e)` with `x = m * 2^e`, `m` in `[sqrt(1/2), sqrt(2))`.
fn frexp_sqrt2(kb: &mut KernelBuilder, x: E) -> (E, E) {
    let t = kb.ty(x);
    let (it, mant_bits, bias, mant_mask, one_bits, tiny, scale_exp): (DType, i64, i64, i64, i64, f64, i64) = if t == DType::F32 {
        (DType::I32, 23, 127, 0x7f_ffff, 0x3f80_0000, f32::MIN_POSITIVE as f64, 25)
    } else {
        (DType::I64, 52, 1023, 0x000f_ffff_ffff_ffff, 0x3ff0_0000_0000_0000, f64::MIN_POSITIVE, 54)
    };
    let mut f = F::new(kb, t);
    // Scale subnormals up first.
    let small = f.cmpc(KBinary::Lt, x, tiny);
    let scaled = f.mulc(x, (2f64).powi(scale_exp as i32));
    let xs = f.sel(small, scaled, x);
    let bits = kb.bitcast(it, xs);
    let sh = kb.iconst(it, mant_bits);
    let ebits = kb.binary(KBinary::Shr, bits, sh);
    let emask = kb.iconst(it, if t == DType::F32 { 0xff } else { 0x7ff });
    let ebits = kb.binary(KBinary::And, ebits, emask);
    let b = kb.iconst(it, bias);
    let e = kb.binary(KBinary::Sub, ebits, b);
    let mm = kb.iconst(it, mant_mask);
    let m = kb.binary(KBinary::And, bits, mm);
    let ob = kb.iconst(it, one_bits);
    let m = kb.binary(KBinary::Or, m, ob);
    let m = kb.bitcast(t, m);
    let mut f = F::new(kb, t);
    let e = f.kb.convert(t, e);
    let corr = f.c(scale_exp as f64);
    let e_sub = f.sub(e, corr);
    let e = f.sel(small, e_sub, e);
    let big = f.cmpc(KBinary::Gt, m, std::f64::consts::SQRT_2);
    let mh = f.mulc(m, 0.5);
    let m = f.sel(big, mh, m);
    let e1 = f.addc(e, 1.0);
    let e = f.sel(big, e1, e);
    (m, e)
}

/// Natural logarithm.
pub fn log(kb: &mut KernelBuilder, x: E) -> E {
    let t = kb.ty(x);
    let (m, e) = frexp_sqrt2(kb, x);
    let mut f = F::new(kb, t);
    let fm = f.addc(m, -1.0);
    let r = if t == DType::F32 {
        let z = f.mul(fm, fm);
        let p = f.poly(
            fm,
            &[
                7.037_683_629_2e-2,
                -1.151_461_031_0e-1,
                1.167_699_874_0e-1,
                -1.242_014_084_6e-1,
                1.424_932_278_7e-1,
                -1.666_805_766_5e-1,
                2.000_071_476_5e-1,
                -2.499_999_399_3e-1,
                3.333_333_117_4e-1,
            ],
        );
        let y = f.mul(p, fm);
        let y = f.mul(y, z);
        let c1 = f.mulc(e, -2.121_944_40e-4);
        let y = f.add(y, c1);
        let hz = f.mulc(z, 0.5);
        let y = f.sub(y, hz);
        let s = f.add(fm, y);
        let c2 = f.mulc(e, 0.693_359_375);
        f.add(s, c2)
    } else {
        // log(m) = 2 atanh(s), s = (m-1)/(m+1)
        let d = f.addc(m, 1.0);
        let s = f.div(fm, d);
        let s2 = f.mul(s, s);
        let coeffs: Vec<f64> = (0..11).rev().map(|k| 1.0 / (2 * k + 1) as f64).collect();
        let p = f.poly(s2, &coeffs);
        let two_s = f.mulc(s, 2.0);
        let lm = f.mul(two_s, p);
        let a = f.mulc(e, 6.931_471_803_691_238_164_9e-1);
        let b = f.mulc(e, 1.908_214_929_270_587_700_02e-10);
        let lb = f.add(lm, b);
        f.add(a, lb)
    };
    // Special values: log(0) = -inf, log(neg) = NaN, log(inf) = inf, NaN stays NaN.
    let zero = f.cmpc(KBinary::Eq, x, 0.0);
    let neg = f.cmpc(KBinary::Lt, x, 0.0);
    let inf = f.cmpc(KBinary::Eq, x, f64::INFINITY);
    let ninf = f.c(f64::NEG_INFINITY);
    let pinf = f.c(f64::INFINITY);
    let nan = f.c(f64::NAN);
    let r = f.sel(zero, ninf, r);
    let r = f.sel(inf, pinf, r);
    let isnan = f.is_nan(x);
    let bad = f.kb.binary(KBinary::Or, neg, isnan);
    f.sel(bad, nan, r)
}

/// log(1 + u), accurate for small `u` (the `(1+u)-1` correction trick).
fn log1p(kb: &mut KernelBuilder, u: E) -> E {
    let t = kb.ty(u);
    let mut f = F::new(kb, t);
    let w = f.addc(u, 1.0);
    let wm1 = f.addc(w, -1.0);
    let lw = log(f.kb, w);
    let mut f = F::new(kb, t);
    let q = f.div(u, wm1);
    let corrected = f.mul(lw, q);
    let exact = f.cmpc(KBinary::Eq, wm1, 0.0);
    let r = f.sel(exact, u, corrected);
    let inf = f.cmpc(KBinary::Eq, u, f64::INFINITY);
    f.sel(inf, u, r)
}

/// sin(x) or cos(x).
fn sin_cos(kb: &mut KernelBuilder, x: E, cosine: bool) -> E {
    let t = kb.ty(x);
    let mut f = F::new(kb, t);
    let (p1, p2, p3) = if t == DType::F32 {
        (1.570_312_5, 4.837_512_969_970_703_125e-4, 7.549_789_954_891_882_16e-8)
    } else {
        (1.570_796_326_734_125_614_17, 6.077_100_506_303_965_976_6e-11, 2.022_266_248_711_166_455_8e-21)
    };
    let q = f.mulc(x, std::f64::consts::FRAC_2_PI);
    let j = f.nearest(q);
    let a = f.mulc(j, p1);
    let y = f.sub(x, a);
    let b = f.mulc(j, p2);
    let y = f.sub(y, b);
    let c = f.mulc(j, p3);
    let y = f.sub(y, c);
    let z = f.mul(y, y);
    let (sp, cp): (&[f64], &[f64]) = if t == DType::F32 {
        (
            &[-1.951_529_589_1e-4, 8.332_160_873_6e-3, -1.666_665_461_1e-1],
            &[2.443_315_711_809_948e-5, -1.388_731_625_493_765e-3, 4.166_664_568_298_827e-2],
        )
    } else {
        (
            &[
                1.589_690_995_211_550_102_21e-10,
                -2.505_076_025_340_686_341_95e-8,
                2.755_731_370_707_006_767_89e-6,
                -1.984_126_982_985_794_931_34e-4,
                8.333_333_333_322_489_461_24e-3,
                -1.666_666_666_666_663_243_48e-1,
            ],
            &[
                -1.135_964_755_778_819_482_65e-11,
                2.087_572_321_298_174_827_9e-9,
                -2.755_731_435_139_066_330_35e-7,
                2.480_158_728_947_672_941_78e-5,
                -1.388_888_888_887_410_957_49e-3,
                4.166_666_666_666_660_190_37e-2,
            ],
        )
    };
    // sin(y) = y + y z S(z); cos(y) = 1 - z/2 + z^2 C(z)
    let s = f.poly(z, sp);
    let yz = f.mul(y, z);
    let s = f.mul(yz, s);
    let sin_y = f.add(y, s);
    let cpoly = f.poly(z, cp);
    let z2 = f.mul(z, z);
    let cc = f.mul(z2, cpoly);
    let hz = f.mulc(z, 0.5);
    let one = f.c(1.0);
    let c0 = f.sub(one, hz);
    let cos_y = f.add(c0, cc);
    // Quadrant from j (mod 4); cos(x) = sin(x + pi/2) shifts the quadrant by one.
    let it = f.int_t();
    let ji = f.kb.convert(it, j);
    let ji = if cosine { f.kb.add_c(ji, 1) } else { ji };
    let three = f.kb.iconst(it, 3);
    let quad = f.kb.binary(KBinary::And, ji, three);
    let one_i = f.kb.iconst(it, 1);
    let two_i = f.kb.iconst(it, 2);
    let odd = f.kb.binary(KBinary::And, quad, one_i);
    let zi = f.kb.iconst(it, 0);
    let odd = f.kb.binary(KBinary::Ne, odd, zi);
    let hi_half = f.kb.binary(KBinary::And, quad, two_i);
    let hi_half = f.kb.binary(KBinary::Ne, hi_half, zi);
    let v = f.sel(odd, cos_y, sin_y);
    let nv = f.neg(v);
    let r = f.sel(hi_half, nv, v);
    // Infinite input gives NaN.
    let ax = f.abs(x);
    let inf = f.cmpc(KBinary::Eq, ax, f64::INFINITY);
    let nan = f.c(f64::NAN);
    f.sel(inf, nan, r)
}

/// arctan(x).
fn atan(kb: &mut KernelBuilder, x: E) -> E {
    let t = kb.ty(x);
    let mut f = F::new(kb, t);
    let a = f.abs(x);
    let t3p8 = 2.414_213_562_373_095_048_80;
    let big = f.cmpc(KBinary::Gt, a, t3p8);
    let mid_lim = if t == DType::F32 { 0.414_213_562_373_095_048_80 } else { 0.66 };
    let mid = f.cmpc(KBinary::Gt, a, mid_lim);
    let one = f.c(1.0);
    let m1 = f.c(-1.0);
    let inv = f.div(m1, a);
    let am1 = f.sub(a, one);
    let ap1 = f.add(a, one);
    let red = f.div(am1, ap1);
    let tt = f.sel(mid, red, a);
    let tt = f.sel(big, inv, tt);
    let pio2 = f.c(std::f64::consts::FRAC_PI_2);
    let pio4 = f.c(std::f64::consts::FRAC_PI_4);
    let zero = f.c(0.0);
    let y0 = f.sel(mid, pio4, zero);
    let y0 = f.sel(big, pio2, y0);
    let z = f.mul(tt, tt);
    let r = if t == DType::F32 {
        let p = f.poly(z, &[8.053_744_495_38e-2, -1.387_768_560_32e-1, 1.997_771_064_78e-1, -3.333_294_915_39e-1]);
        let pz = f.mul(p, z);
        let pzt = f.mul(pz, tt);
        let s = f.add(pzt, tt);
        f.add(y0, s)
    } else {
        let p = f.poly(
            z,
            &[
                -8.750_608_600_031_904_122_785e-1,
                -1.615_753_718_733_365_076_637e1,
                -7.500_855_792_314_704_667_340e1,
                -1.228_866_684_490_136_173_410e2,
                -6.485_021_904_942_025_371_773e1,
            ],
        );
        let q = f.poly(
            z,
            &[
                1.0,
                2.485_846_490_142_306_297_962e1,
                1.650_270_098_316_988_542_046e2,
                4.328_810_604_912_902_668_951e2,
                4.853_903_996_359_136_964_868e2,
                1.945_506_571_482_613_964_425e2,
            ],
        );
        let pq = f.div(p, q);
        let zz = f.mul(z, pq);
        let w = f.mul(tt, zz);
        let w = f.add(w, tt);
        let more = 6.123_233_995_736_765_886_130e-17;
        let c_big = f.c(more);
        let c_mid = f.c(0.5 * more);
        let corr = f.sel(mid, c_mid, zero);
        let corr = f.sel(big, c_big, corr);
        let w = f.add(w, corr);
        f.add(y0, w)
    };
    let r = f.with_sign_of(r, x);
    let nan = f.is_nan(x);
    f.sel(nan, x, r)
}

fn sinh(kb: &mut KernelBuilder, x: E) -> E {
    let t = kb.ty(x);
    let mut f = F::new(kb, t);
    // Series for |x| < 1 (odd terms up to x^21), exponentials beyond.
    let z = f.mul(x, x);
    let coeffs: Vec<f64> = (0..11).rev().map(|k| 1.0 / factorial(2 * k + 1)).collect();
    let p = f.poly(z, &coeffs);
    let series = f.mul(x, p);
    let ex = exp(f.kb, x);
    let mut f = F::new(kb, t);
    let nx = f.neg(x);
    let emx = exp(f.kb, nx);
    let mut f = F::new(kb, t);
    let d = f.sub(ex, emx);
    let big = f.mulc(d, 0.5);
    let a = f.abs(x);
    let small = f.cmpc(KBinary::Lt, a, 1.0);
    f.sel(small, series, big)
}

fn factorial(n: u32) -> f64 {
    (1..=n).map(|k| k as f64).product()
}

fn tanh(kb: &mut KernelBuilder, x: E) -> E {
    let t = kb.ty(x);
    let mut f = F::new(kb, t);
    let a = f.abs(x);
    let z = f.mul(x, x);
    let small = if t == DType::F32 {
        let p = f.poly(
            z,
            &[-5.704_988_727_45e-3, 2.063_908_879_54e-2, -5.373_971_555_31e-2, 1.333_144_220_36e-1, -3.333_328_194_22e-1],
        );
        let xz = f.mul(x, z);
        let q = f.mul(xz, p);
        f.add(x, q)
    } else {
        let p = f.poly(z, &[-9.643_991_794_250_522_386_28e-1, -9.928_772_310_019_185_865_64e1, -1.614_687_684_417_084_479_52e3]);
        let q = f.poly(z, &[1.0, 1.128_116_784_916_329_314_02e2, 2.235_488_390_601_004_485_83e3, 4.844_063_053_251_254_860_48e3]);
        let pq = f.div(p, q);
        let xz = f.mul(x, z);
        let w = f.mul(xz, pq);
        f.add(x, w)
    };
    // 1 - 2 / (e^{2|x|} + 1)
    let two_a = f.mulc(a, 2.0);
    let e = exp(f.kb, two_a);
    let mut f = F::new(kb, t);
    let d = f.addc(e, 1.0);
    let two = f.c(2.0);
    let q = f.div(two, d);
    let one = f.c(1.0);
    let big = f.sub(one, q);
    let big = f.with_sign_of(big, x);
    let is_small = f.cmpc(KBinary::Lt, a, 0.625);
    let r = f.sel(is_small, small, big);
    let nan = f.is_nan(x);
    f.sel(nan, x, r)
}

/// erf(x). f32: one odd/even rational approximation on [-4, 4] (erf rounds to ±1 beyond), as
/// in Eigen's `erf` for float: ~20 operations instead of evaluating two branches. f64: Taylor
/// series near zero, a continued fraction for erfc beyond.
fn erf(kb: &mut KernelBuilder, x: E) -> E {
    let t = kb.ty(x);
    if t == DType::F32 {
        let mut f = F::new(kb, t);
        let hi = f.c(4.0);
        let lo = f.c(-4.0);
        let c = f.min(x, hi);
        let c = f.max(c, lo);
        let z = f.mul(c, c);
        let p = f.poly(
            z,
            &[
                -2.72614225801306e-10,
                2.77068142495902e-08,
                -2.10102402082508e-06,
                -5.69250639462346e-05,
                -7.34990630326855e-04,
                -2.95459980854025e-03,
                -1.60960333262415e-02,
            ],
        );
        let p = f.mul(c, p);
        let q = f.poly(z, &[-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03, -1.42647390514189e-02]);
        let r = f.div(p, q);
        let nan = f.is_nan(x);
        return f.sel(nan, x, r);
    }
    let mut f = F::new(kb, t);
    let a = f.abs(x);
    let z = f.mul(x, x);
    let two_over_sqrt_pi = 2.0 / std::f64::consts::PI.sqrt();
    // erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
    let (terms, split) = if t == DType::F32 { (14, 1.0) } else { (40, 2.5) };
    let coeffs: Vec<f64> = (0..terms)
        .rev()
        .map(|n| {
            let s = if n % 2 == 0 { 1.0 } else { -1.0 };
            s * two_over_sqrt_pi / (factorial(n) * (2 * n + 1) as f64)
        })
        .collect();
    let p = f.poly(z, &coeffs);
    let series = f.mul(x, p);
    let tail = if t == DType::F32 {
        // 1 - (a1 t + a2 t^2 + ... + a5 t^5) e^{-x^2}, t = 1 / (1 + p x)
        let pa = f.mulc(a, 0.327_591_1);
        let d = f.addc(pa, 1.0);
        let one = f.c(1.0);
        let tt = f.div(one, d);
        let poly = f.poly(tt, &[1.061_405_429, -1.453_152_027, 1.421_413_741, -0.284_496_736, 0.254_829_592, 0.0]);
        let nz = f.neg(z);
        let e = exp(f.kb, nz);
        let mut f = F::new(kb, t);
        let pe = f.mul(poly, e);
        let one = f.c(1.0);
        f.sub(one, pe)
    } else {
        // erfc(a) = e^{-a^2}/sqrt(pi) * 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + 2/(a + ...)))))
        let mut cf = f.c(0.0);
        for k in (1..=60).rev() {
            let num = f.c(k as f64 / 2.0);
            let den = f.add(a, cf);
            cf = f.div(num, den);
        }
        let den = f.add(a, cf);
        let nz = f.neg(z);
        let e = exp(f.kb, nz);
        let mut f = F::new(kb, t);
        let q = f.div(e, den);
        let erfc = f.mulc(q, 1.0 / std::f64::consts::PI.sqrt());
        let one = f.c(1.0);
        f.sub(one, erfc)
    };
    let mut f = F::new(kb, t);
    let tail = f.with_sign_of(tail, x);
    let small = f.cmpc(KBinary::Lt, a, split);
    let r = f.sel(small, series, tail);
    let nan = f.is_nan(x);
    f.sel(nan, x, r)
}

/// x^y for a compute type `ct`.
fn pow(kb: &mut KernelBuilder, x: E, y: E, ct: DType) -> E {
    if !ct.is_float() {
        return int_pow(kb, x, y, ct);
    }
    if let Some(r) = kb.as_float_const(y).and_then(|yv| pow_quarters(kb, x, yv, ct)) {
        return r;
    }
    // Work in f64 for f32 inputs: y*log|x| needs the extra precision.
    let (xd, yd) = (kb.convert(DType::F64, x), kb.convert(DType::F64, y));
    let mut f = F::new(kb, DType::F64);
    let ax = f.abs(xd);
    let l = log(f.kb, ax);
    let mut f = F::new(kb, DType::F64);
    let yl = f.mul(yd, l);
    let m = exp(f.kb, yl);
    let mut f = F::new(kb, DType::F64);
    let fy = f.floor(yd);
    let is_int = f.cmp(KBinary::Eq, fy, yd);
    let half = f.mulc(yd, 0.5);
    let fh = f.floor(half);
    let odd = f.cmp(KBinary::Ne, fh, half);
    let odd = f.kb.binary(KBinary::And, odd, is_int);
    let neg = f.cmpc(KBinary::Lt, xd, 0.0);
    let nm = f.neg(m);
    let signed = f.sel(odd, nm, m);
    let nan = f.c(f64::NAN);
    let neg_result = f.sel(is_int, signed, nan);
    let r = f.sel(neg, neg_result, m);
    let one = f.c(1.0);
    let y0 = f.cmpc(KBinary::Eq, yd, 0.0);
    let x1 = f.cmpc(KBinary::Eq, xd, 1.0);
    let trivially_one = f.kb.binary(KBinary::Or, y0, x1);
    let r = f.sel(trivially_one, one, r);
    kb.convert(ct, r)
}

/// Largest |y| [`pow_quarters`] expands.
const POW_QUARTERS_MAX: f64 = 16.0;

/// x^y for a constant y that is a multiple of 1/4 with |y| <= 16, from multiplications and
/// square roots in the compute type: x^(w + r/4) = x^w (square-and-multiply) times sqrt(sqrt(x)),
/// sqrt(x) or both, and a reciprocal when y < 0. A few roundings instead of the f64 exp/log
/// path, at a small fraction of its cost (LRN's x^0.75, variance's x^2, tanh-GELU's x^3).
/// Special values follow `pow`: a negative x with a fractional y is NaN (from sqrt), and -0 is
/// turned into +0 first when y is fractional, where the result's zero or infinity is positive.
fn pow_quarters(kb: &mut KernelBuilder, x: E, y: f64, ct: DType) -> Option<E> {
    let quarters = y * 4.0;
    if quarters.fract() != 0.0 || y.abs() > POW_QUARTERS_MAX {
        return None;
    }
    let n = quarters.abs() as u64;
    let (whole, frac) = (n / 4, n % 4);
    let mut f = F::new(kb, ct);
    let x = if frac != 0 { f.addc(x, 0.0) } else { x };
    let mut acc: Option<E> = None;
    let (mut base, mut w) = (x, whole);
    while w > 0 {
        if w & 1 == 1 {
            acc = Some(match acc {
                None => base,
                Some(a) => f.mul(a, base),
            });
        }
        w >>= 1;
        if w > 0 {
            base = f.mul(base, base);
        }
    }
    if frac != 0 {
        let root2 = f.sqrt(x);
        let part = match frac {
            2 => root2,
            1 => f.sqrt(root2),
            _ => {
                let root4 = f.sqrt(root2);
                f.mul(root2, root4)
            }
        };
        acc = Some(match acc {
            None => part,
            Some(a) => f.mul(a, part),
        });
    }
    let r = acc.unwrap_or_else(|| f.c(1.0));
    Some(if y < 0.0 {
        let one = f.c(1.0);
        f.div(one, r)
    } else {
        r
    })
}

/// Integer x^y by square-and-multiply over the low 32 bits of `y` (y < 0 gives 0 unless |x| = 1).
fn int_pow(kb: &mut KernelBuilder, x: E, y: E, ct: DType) -> E {
    let mut result = kb.constant(ct, 1.0);
    let mut base = x;
    let y64 = kb.convert(DType::I64, y);
    for bit in 0..32 {
        let sh = kb.i64c(bit);
        let b = kb.binary(KBinary::Shr, y64, sh);
        let one = kb.i64c(1);
        let b = kb.binary(KBinary::And, b, one);
        let z = kb.i64c(0);
        let set = kb.binary(KBinary::Ne, b, z);
        let prod = kb.binary(KBinary::Mul, result, base);
        result = kb.select(set, prod, result);
        base = kb.binary(KBinary::Mul, base, base);
    }
    if ct.is_signed_int() {
        let zero = kb.i64c(0);
        let neg = kb.binary(KBinary::Lt, y64, zero);
        let one = kb.constant(ct, 1.0);
        let m1 = kb.constant(ct, -1.0);
        let zc = kb.constant(ct, 0.0);
        let is1 = kb.binary(KBinary::Eq, x, one);
        let ism1 = kb.binary(KBinary::Eq, x, m1);
        let one64 = kb.i64c(1);
        let odd = kb.binary(KBinary::And, y64, one64);
        let odd = kb.binary(KBinary::Ne, odd, zero);
        let m1r = kb.select(odd, m1, one);
        let negr = kb.select(ism1, m1r, zc);
        let negr = kb.select(is1, one, negr);
        kb.select(neg, negr, result)
    } else {
        result
    }
}

// ---------------------------------------------------------------------------------------------
// Conversions and storage formats
// ---------------------------------------------------------------------------------------------

/// Cast a value of storage dtype `from` to storage dtype `to`, returning `to`'s compute type.
pub fn cast(kb: &mut KernelBuilder, x: E, from: DType, to: DType, saturate: bool) -> E {
    let (cf, ctt) = (from.compute_type(), to.compute_type());
    if from == to {
        return x;
    }
    if is_narrow_float(to) {
        // Narrow floats round from f32 (f64 sources round to f32 first).
        let v = kb.convert(DType::F32, x);
        let v = if saturate && is_float8(to) {
            let m = max_finite(to);
            let mut f = F::new(kb, DType::F32);
            let hi = f.c(m);
            let lo = f.c(-m);
            let c = f.min(v, hi);
            let c = f.max(c, lo);
            let nan = f.is_nan(v);
            f.sel(nan, v, c)
        } else {
            v
        };
        return round_to_storage(kb, v, to);
    }
    // Everything else (including float -> int4/int2) truncates and wraps, as numpy's astype does.
    let _ = cf;
    let v = kb.convert(ctt, x);
    round_to_storage(kb, v, to)
}

/// Reinterpret bits of storage dtype `from` as `to` (same width).
pub fn bitcast(kb: &mut KernelBuilder, x: E, from: DType, to: DType) -> E {
    let raw = encode(kb, x, from);
    let rt = crate::kernel::raw_type(to);
    let r = if kb.ty(raw).is_float() || rt.is_float() { kb.bitcast(rt, raw) } else { kb.convert(rt, raw) };
    decode(kb, r, to)
}

fn is_float8(t: DType) -> bool {
    matches!(t, DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ)
}

fn is_narrow_float(t: DType) -> bool {
    t.is_float() && t.compute_type() == DType::F32 && t != DType::F32
}

fn max_finite(t: DType) -> f64 {
    match t {
        DType::F8E4M3FN => 448.0,
        DType::F8E4M3FNUZ => 240.0,
        DType::F8E5M2 => 57344.0,
        DType::F8E5M2FNUZ => 57344.0,
        DType::F4E2M1 => 6.0,
        DType::F16 => 65504.0,
        DType::BF16 => 3.389_531_389_251_535_5e38,
        _ => f64::MAX,
    }
}

/// Round a compute-type value to what `storage` can represent (identity for compute types).
pub fn round_to_storage(kb: &mut KernelBuilder, v: E, storage: DType) -> E {
    if storage.is_compute_type() {
        return v;
    }
    let raw = encode(kb, v, storage);
    decode(kb, raw, storage)
}

/// Raw loaded bits of `storage` → the compute-type value.
pub fn decode(kb: &mut KernelBuilder, raw: E, storage: DType) -> E {
    let v = decode_bits(kb, raw, storage);
    if !storage.is_compute_type() {
        kb.note_decoded(v, raw, storage);
    }
    v
}

fn decode_bits(kb: &mut KernelBuilder, raw: E, storage: DType) -> E {
    use DType::*;
    match storage {
        F16 => {
            let h = kb.convert(I32, raw);
            let sign = and_c(kb, h, 0x8000);
            let sign = shl_c(kb, sign, 16);
            let em = and_c(kb, h, 0x7fff);
            let shifted = shl_c(kb, em, 13);
            let fl = kb.bitcast(F32, shifted);
            let magic = kb.f32c(f32::from_bits(0x7780_0000));
            let normal = kb.binary(KBinary::Mul, fl, magic);
            let normal = kb.bitcast(I32, normal);
            let special_bits = or_c(kb, shifted, 0x7f80_0000);
            let lim = kb.iconst(I32, 0x7c00);
            let is_special = kb.binary(KBinary::Ge, em, lim);
            let bits = kb.select(is_special, special_bits, normal);
            let bits = kb.binary(KBinary::Or, bits, sign);
            kb.bitcast(F32, bits)
        }
        BF16 => {
            let h = kb.convert(I32, raw);
            let bits = shl_c(kb, h, 16);
            kb.bitcast(F32, bits)
        }
        F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | F4E2M1 => decode_small_float(kb, raw, storage),
        F8E8M0 => {
            let r = kb.convert(I32, raw);
            let normal = shl_c(kb, r, 23);
            let zero = kb.iconst(I32, 0);
            let is0 = kb.binary(KBinary::Eq, r, zero);
            let sub = kb.iconst(I32, 0x0040_0000);
            let bits = kb.select(is0, sub, normal);
            let ff = kb.iconst(I32, 0xff);
            let isnan = kb.binary(KBinary::Eq, r, ff);
            let nan = kb.iconst(I32, 0x7fc0_0000);
            let bits = kb.select(isnan, nan, bits);
            kb.bitcast(F32, bits)
        }
        I4 | I2 | U4 | U2 => {
            // Loads already unpack; re-normalise for values built in registers.
            let bits = storage.bits() as i64;
            let up = 8 - bits;
            let t = kb.ty(raw);
            let s = kb.iconst(t, up);
            let v = kb.binary(KBinary::Shl, raw, s);
            if storage.is_signed_int() {
                kb.binary(KBinary::Shr, v, s)
            } else {
                let m = kb.iconst(t, (1 << bits) - 1);
                kb.binary(KBinary::And, raw, m)
            }
        }
        _ => raw,
    }
}

/// A compute-type value → the raw bits stored for `storage`.
pub fn encode(kb: &mut KernelBuilder, v: E, storage: DType) -> E {
    use DType::*;
    if let Some(raw) = kb.raw_of(v, storage) {
        return raw;
    }
    match storage {
        F16 => {
            // Round to nearest even (after F. Giesen's float_to_half).
            let bits = kb.bitcast(I32, v);
            let sign = kb.iconst(I32, 16);
            let sign = kb.binary(KBinary::Shr, bits, sign);
            let sign = and_c(kb, sign, 0x8000);
            let abs = and_c(kb, bits, 0x7fff_ffff);
            let f16max = kb.iconst(I32, (127 + 16) << 23);
            let too_big = kb.binary(KBinary::Ge, abs, f16max);
            let infbits = kb.iconst(I32, 0x7f80_0000);
            let is_nan = kb.binary(KBinary::Gt, abs, infbits);
            let nanv = kb.iconst(I32, 0x7e00);
            let infv = kb.iconst(I32, 0x7c00);
            let big_v = kb.select(is_nan, nanv, infv);
            // subnormal: add a magic float, take the low bits
            let denorm_magic = ((127 - 15) + (23 - 10) + 1) << 23;
            let absf = kb.bitcast(F32, abs);
            let magic = kb.f32c(f32::from_bits(denorm_magic as u32));
            let sum = kb.binary(KBinary::Add, absf, magic);
            let sumb = kb.bitcast(I32, sum);
            let dm = kb.iconst(I32, denorm_magic);
            let sub_v = kb.binary(KBinary::Sub, sumb, dm);
            // normal: rebias and round
            let thirteen = kb.iconst(I32, 13);
            let odd = kb.binary(KBinary::Shr, abs, thirteen);
            let odd = and_c(kb, odd, 1);
            let rebias = kb.iconst(I32, (((15 - 127) << 23) as i64) + 0xfff);
            let n = kb.binary(KBinary::Add, abs, rebias);
            let n = kb.binary(KBinary::Add, n, odd);
            let norm_v = kb.binary(KBinary::Shr, n, thirteen);
            let small_lim = kb.iconst(I32, 113 << 23);
            let is_sub = kb.binary(KBinary::Lt, abs, small_lim);
            let r = kb.select(is_sub, sub_v, norm_v);
            let r = kb.select(too_big, big_v, r);
            let r = kb.binary(KBinary::Or, r, sign);
            kb.convert(U16, r)
        }
        BF16 => {
            let bits = kb.bitcast(I32, v);
            let sixteen = kb.iconst(I32, 16);
            let lsb = kb.binary(KBinary::Shr, bits, sixteen);
            let lsb = and_c(kb, lsb, 1);
            let r = kb.add_c(bits, 0x7fff);
            let r = kb.binary(KBinary::Add, r, lsb);
            let r = kb.binary(KBinary::Shr, r, sixteen);
            let r = and_c(kb, r, 0xffff);
            let hi = kb.binary(KBinary::Shr, bits, sixteen);
            let nan = or_c(kb, hi, 0x0040);
            let nan = and_c(kb, nan, 0xffff);
            let is_nan = kb.binary(KBinary::Ne, v, v);
            let r = kb.select(is_nan, nan, r);
            kb.convert(U16, r)
        }
        F8E4M3FN | F8E4M3FNUZ | F8E5M2 | F8E5M2FNUZ | F4E2M1 => encode_small_float(kb, v, storage),
        F8E8M0 => {
            // Round up to the next power of two (ONNX default round_mode="up"), saturating.
            let bits = kb.bitcast(I32, v);
            let twenty3 = kb.iconst(I32, 23);
            let e = kb.binary(KBinary::Shr, bits, twenty3);
            let e = and_c(kb, e, 0xff);
            let frac = and_c(kb, bits, 0x7f_ffff);
            let zero = kb.iconst(I32, 0);
            let has_frac = kb.binary(KBinary::Ne, frac, zero);
            let ff = kb.iconst(I32, 0xff);
            let fe = kb.iconst(I32, 0xfe);
            let special = kb.binary(KBinary::Eq, e, ff);
            let at_max = kb.binary(KBinary::Eq, e, fe);
            let not_max = kb.unary(KUnary::Not, at_max);
            let up = kb.binary(KBinary::And, has_frac, not_max);
            let inc = kb.convert(I32, up);
            let r = kb.binary(KBinary::Add, e, inc);
            let r = kb.select(special, ff, r);
            kb.convert(U8, r)
        }
        I4 | U4 | I2 | U2 => {
            let t = kb.ty(v);
            let m = kb.iconst(t, (1 << storage.bits()) - 1);
            kb.binary(KBinary::And, v, m)
        }
        _ => v,
    }
}

/// Parameters of the small float formats: (exponent bits, mantissa bits, bias, kind).
#[derive(Clone, Copy, PartialEq)]
enum SmallKind {
    /// IEEE-like with inf (e5m2).
    Ieee,
    /// Finite, NaN = all ones (e4m3fn).
    FiniteNanAllOnes,
    /// Finite, NaN = 0x80, no negative zero (fnuz).
    Fnuz,
    /// Finite, no NaN (e2m1).
    FiniteNoNan,
}

fn small_params(t: DType) -> (i64, i64, i64, SmallKind, i64) {
    match t {
        DType::F8E4M3FN => (4, 3, 7, SmallKind::FiniteNanAllOnes, 8),
        DType::F8E4M3FNUZ => (4, 3, 8, SmallKind::Fnuz, 8),
        DType::F8E5M2 => (5, 2, 15, SmallKind::Ieee, 8),
        DType::F8E5M2FNUZ => (5, 2, 16, SmallKind::Fnuz, 8),
        DType::F4E2M1 => (2, 1, 1, SmallKind::FiniteNoNan, 4),
        _ => unreachable!(),
    }
}

fn decode_small_float(kb: &mut KernelBuilder, raw: E, t: DType) -> E {
    let (eb, mb, bias, kind, width) = small_params(t);
    let r = kb.convert(DType::I32, raw);
    let sign_bit = width - 1;
    let sign = shr_c(kb, r, sign_bit);
    let sign = and_c(kb, sign, 1);
    let sign = shl_c(kb, sign, 31);
    let e = shr_c(kb, r, mb);
    let e = and_c(kb, e, (1 << eb) - 1);
    let m = and_c(kb, r, (1 << mb) - 1);
    // normal: f32 bits = (e - bias + 127) << 23 | m << (23 - mb)
    let eb32 = kb.add_c(e, 127 - bias);
    let eb32 = shl_c(kb, eb32, 23);
    let mb32 = shl_c(kb, m, 23 - mb);
    let normal = kb.binary(KBinary::Or, eb32, mb32);
    let normal = kb.bitcast(DType::F32, normal);
    // subnormal: m * 2^(1 - bias - mb)
    let mf = kb.convert(DType::F32, m);
    let scale = kb.f32c((2f32).powi((1 - bias - mb) as i32));
    let sub = kb.binary(KBinary::Mul, mf, scale);
    let zero = kb.iconst(DType::I32, 0);
    let is_sub = kb.binary(KBinary::Eq, e, zero);
    let mag = kb.select(is_sub, sub, normal);
    let magb = kb.bitcast(DType::I32, mag);
    let bits = kb.binary(KBinary::Or, magb, sign);
    let val = kb.bitcast(DType::F32, bits);
    let nan = kb.f32c(f32::NAN);
    match kind {
        SmallKind::Ieee => {
            let emax = kb.iconst(DType::I32, (1 << eb) - 1);
            let top = kb.binary(KBinary::Eq, e, emax);
            let mzero = kb.binary(KBinary::Eq, m, zero);
            let inf = kb.f32c(f32::INFINITY);
            let ninf = kb.f32c(f32::NEG_INFINITY);
            let sgn_neg = kb.binary(KBinary::Ne, sign, zero);
            let infv = kb.select(sgn_neg, ninf, inf);
            let special = kb.select(mzero, infv, nan);
            kb.select(top, special, val)
        }
        SmallKind::FiniteNanAllOnes => {
            let low = and_c(kb, r, 0x7f);
            let all = kb.iconst(DType::I32, 0x7f);
            let is_nan = kb.binary(KBinary::Eq, low, all);
            kb.select(is_nan, nan, val)
        }
        SmallKind::Fnuz => {
            let c80 = kb.iconst(DType::I32, 0x80);
            let is_nan = kb.binary(KBinary::Eq, r, c80);
            kb.select(is_nan, nan, val)
        }
        SmallKind::FiniteNoNan => val,
    }
}

fn encode_small_float(kb: &mut KernelBuilder, v: E, t: DType) -> E {
    let (eb, mb, bias, kind, width) = small_params(t);
    let maxv = max_finite(t);
    let emin = 1 - bias;
    let bits = kb.bitcast(DType::I32, v);
    let sign = shr_c(kb, bits, 31);
    let sign = and_c(kb, sign, 1);
    let abs_bits = and_c(kb, bits, 0x7fff_ffff);
    let a = kb.bitcast(DType::F32, abs_bits);
    // Normal range: round the f32 mantissa to mb bits (ties to even).
    let shift = 23 - mb;
    let lsb = shr_c(kb, abs_bits, shift);
    let lsb = and_c(kb, lsb, 1);
    let rnd = kb.add_c(abs_bits, (1 << (shift - 1)) - 1);
    let rnd = kb.binary(KBinary::Add, rnd, lsb);
    let rnd = and_c(kb, rnd, !((1i64 << shift) - 1));
    let fe = shr_c(kb, rnd, 23);
    let te = kb.add_c(fe, bias - 127);
    let tm = shr_c(kb, rnd, shift);
    let tm = and_c(kb, tm, (1 << mb) - 1);
    let code_n = shl_c(kb, te, mb);
    let code_n = kb.binary(KBinary::Or, code_n, tm);
    let rounded_n = kb.bitcast(DType::F32, rnd);
    // Subnormal range: a multiple of 2^(emin - mb).
    let q = kb.f32c((2f32).powi((mb - emin) as i32));
    let aq = kb.binary(KBinary::Mul, a, q);
    let qn = kb.unary(KUnary::Nearest, aq);
    let code_s = kb.convert(DType::I32, qn);
    let min_normal = kb.f32c((2f32).powi(emin as i32));
    let is_sub = kb.binary(KBinary::Lt, a, min_normal);
    // A subnormal that rounds up to the smallest normal encodes correctly as code_s (q = 2^mb).
    let code = kb.select(is_sub, code_s, code_n);
    let rounded_big = kb.select(is_sub, min_normal, rounded_n);
    let maxc = kb.f32c(maxv as f32);
    let overflow = kb.binary(KBinary::Gt, rounded_big, maxc);
    let is_nan = kb.binary(KBinary::Ne, v, v);
    let sign_shift = width - 1;
    let sgn = shl_c(kb, sign, sign_shift);
    let nan_code = match kind {
        SmallKind::Ieee => kb.iconst(DType::I32, 0x7f),
        SmallKind::FiniteNanAllOnes => kb.iconst(DType::I32, 0x7f),
        SmallKind::Fnuz => kb.iconst(DType::I32, 0x80),
        // float4 has no NaN: NaN encodes as negative zero (ml_dtypes' convention).
        SmallKind::FiniteNoNan => kb.iconst(DType::I32, 0x8),
    };
    let over_code = match kind {
        SmallKind::Ieee => kb.iconst(DType::I32, ((1 << eb) - 1) << mb),
        SmallKind::FiniteNoNan => kb.iconst(DType::I32, (1 << (width - 1)) - 1),
        _ => nan_code,
    };
    let with_sign = kb.binary(KBinary::Or, code, sgn);
    let over_signed = match kind {
        SmallKind::Ieee | SmallKind::FiniteNoNan | SmallKind::FiniteNanAllOnes => kb.binary(KBinary::Or, over_code, sgn),
        SmallKind::Fnuz => over_code,
    };
    let r = kb.select(overflow, over_signed, with_sign);
    let r = if kind == SmallKind::Fnuz {
        // No negative zero: -0 encodes as 0.
        let zero = kb.iconst(DType::I32, 0);
        let is_zero = kb.binary(KBinary::Eq, code, zero);
        let not_over = kb.unary(KUnary::Not, overflow);
        let z = kb.binary(KBinary::And, is_zero, not_over);
        kb.select(z, zero, r)
    } else {
        r
    };
    let nan_signed = match kind {
        SmallKind::FiniteNanAllOnes => kb.binary(KBinary::Or, nan_code, sgn),
        _ => nan_code,
    };
    let r = kb.select(is_nan, nan_signed, r);
    kb.convert(DType::U8, r)
}

fn and_c(kb: &mut KernelBuilder, a: E, c: i64) -> E {
    let c = kb.iconst(kb.ty(a), c);
    kb.binary(KBinary::And, a, c)
}
fn or_c(kb: &mut KernelBuilder, a: E, c: i64) -> E {
    let c = kb.iconst(kb.ty(a), c);
    kb.binary(KBinary::Or, a, c)
}
fn shl_c(kb: &mut KernelBuilder, a: E, c: i64) -> E {
    let c = kb.iconst(kb.ty(a), c);
    kb.binary(KBinary::Shl, a, c)
}
fn shr_c(kb: &mut KernelBuilder, a: E, c: i64) -> E {
    let c = kb.iconst(kb.ty(a), c);
    kb.binary(KBinary::Shr, a, c)
}
