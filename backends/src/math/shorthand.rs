//! Shorthands over the [`KernelBuilder`] for readable expansions: [`F`], float arithmetic on
//! one type (constants, polynomials, comparisons, 2^n), and `and_c`/`or_c`/`shl_c`/`shr_c` for
//! integer bit fields. Helpers only: no function of a model lives here.

use crate::kernel::{KBinary, KUnary, KernelBuilder, E};
use odc_ir::DType;

/// Float arithmetic on one type (f32 or f64), for readable expansions.
pub(super) struct F<'a> {
    pub(super) kb: &'a mut KernelBuilder,
    pub(super) t: DType,
}

impl<'a> F<'a> {
    pub(super) fn new(kb: &'a mut KernelBuilder, t: DType) -> Self {
        F { kb, t }
    }
    pub(super) fn c(&mut self, v: f64) -> E {
        self.kb.fconst(self.t, v)
    }
    pub(super) fn add(&mut self, a: E, b: E) -> E {
        self.kb.binary(KBinary::Add, a, b)
    }
    pub(super) fn sub(&mut self, a: E, b: E) -> E {
        self.kb.binary(KBinary::Sub, a, b)
    }
    pub(super) fn mul(&mut self, a: E, b: E) -> E {
        self.kb.binary(KBinary::Mul, a, b)
    }
    pub(super) fn div(&mut self, a: E, b: E) -> E {
        self.kb.binary(KBinary::Div, a, b)
    }
    pub(super) fn mulc(&mut self, a: E, c: f64) -> E {
        let c = self.c(c);
        self.mul(a, c)
    }
    pub(super) fn addc(&mut self, a: E, c: f64) -> E {
        let c = self.c(c);
        self.add(a, c)
    }
    pub(super) fn neg(&mut self, a: E) -> E {
        self.kb.unary(KUnary::Neg, a)
    }
    pub(super) fn abs(&mut self, a: E) -> E {
        self.kb.unary(KUnary::Abs, a)
    }
    pub(super) fn sqrt(&mut self, a: E) -> E {
        self.kb.unary(KUnary::Sqrt, a)
    }
    pub(super) fn floor(&mut self, a: E) -> E {
        self.kb.unary(KUnary::Floor, a)
    }
    pub(super) fn nearest(&mut self, a: E) -> E {
        self.kb.unary(KUnary::Nearest, a)
    }
    pub(super) fn sel(&mut self, c: E, a: E, b: E) -> E {
        self.kb.select(c, a, b)
    }
    pub(super) fn cmp(&mut self, op: KBinary, a: E, b: E) -> E {
        self.kb.binary(op, a, b)
    }
    pub(super) fn cmpc(&mut self, op: KBinary, a: E, c: f64) -> E {
        let c = self.c(c);
        self.cmp(op, a, c)
    }
    pub(super) fn min(&mut self, a: E, b: E) -> E {
        self.kb.binary(KBinary::Min, a, b)
    }
    pub(super) fn max(&mut self, a: E, b: E) -> E {
        self.kb.binary(KBinary::Max, a, b)
    }
    /// Horner evaluation of `coeffs[0] * x^n + ... + coeffs[n]`.
    pub(super) fn poly(&mut self, x: E, coeffs: &[f64]) -> E {
        let mut acc = self.c(coeffs[0]);
        for &c in &coeffs[1..] {
            let cc = self.c(c);
            acc = self.kb.fma(acc, x, cc);
        }
        acc
    }
    pub(super) fn is_nan(&mut self, x: E) -> E {
        self.cmp(KBinary::Ne, x, x)
    }
    /// Copy the sign of `s` onto `m` (via select; `m` is non-negative).
    pub(super) fn with_sign_of(&mut self, m: E, s: E) -> E {
        let neg = self.cmpc(KBinary::Lt, s, 0.0);
        let nm = self.neg(m);
        self.sel(neg, nm, m)
    }
    /// The integer bit-pattern type of this float type.
    pub(super) fn int_t(&self) -> DType {
        if self.t == DType::F32 {
            DType::I32
        } else {
            DType::I64
        }
    }
    /// 2^n for an integral-valued float `n` in the normal exponent range.
    pub(super) fn exp2_int(&mut self, n: E) -> E {
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

pub(super) fn and_c(kb: &mut KernelBuilder, a: E, c: i64) -> E {
    let c = kb.iconst(kb.ty(a), c);
    kb.binary(KBinary::And, a, c)
}
pub(super) fn or_c(kb: &mut KernelBuilder, a: E, c: i64) -> E {
    let c = kb.iconst(kb.ty(a), c);
    kb.binary(KBinary::Or, a, c)
}
pub(super) fn shl_c(kb: &mut KernelBuilder, a: E, c: i64) -> E {
    let c = kb.iconst(kb.ty(a), c);
    kb.binary(KBinary::Shl, a, c)
}
pub(super) fn shr_c(kb: &mut KernelBuilder, a: E, c: i64) -> E {
    let c = kb.iconst(kb.ty(a), c);
    kb.binary(KBinary::Shr, a, c)
}
