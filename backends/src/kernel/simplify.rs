//! Binary operations on the [`KernelBuilder`]: constant folding, algebraic identities and the
//! interval and linear-form reasoning that folds view index arithmetic (div/rem of affine
//! forms, merged div/rem pairs) and tracks each result's value range. It only simplifies; node
//! storage and the other operations are in `builder.rs`.

use super::int_bits::{clamp_range, sat_mul};
use super::{Expr, KBinary, KernelBuilder, E};
use odc_ir::DType;

impl KernelBuilder {
    pub fn binary(&mut self, op: KBinary, a: E, b: E) -> E {
        let ta = self.ty(a);
        debug_assert_eq!(ta, self.ty(b), "binary {op:?} operand types differ");
        let out_ty = if op.is_compare() { DType::Bool } else { ta };
        if let Some(e) = self.simplify_binary(op, a, b, ta) {
            return e;
        }
        let range = self.binary_range(op, a, b, ta);
        self.intern(Expr::Binary(op, a, b), out_ty, range)
    }

    fn simplify_binary(&mut self, op: KBinary, a: E, b: E, ty: DType) -> Option<E> {
        use KBinary::*;
        // Integer constant folding.
        if let (Some(x), Some(y)) = (self.as_int_const(a), self.as_int_const(b)) {
            if ty == DType::I64 || ty == DType::I32 || ty == DType::Bool {
                let v = match op {
                    Add => Some(x.wrapping_add(y)),
                    Sub => Some(x.wrapping_sub(y)),
                    Mul => Some(x.wrapping_mul(y)),
                    Div if y != 0 && !(y == -1 && x == i64::MIN) => Some(x / y),
                    Rem if y != 0 && !(y == -1 && x == i64::MIN) => Some(x % y),
                    Min => Some(x.min(y)),
                    Max => Some(x.max(y)),
                    And => Some(x & y),
                    Or => Some(x | y),
                    Xor => Some(x ^ y),
                    Eq => return Some(self.boolc(x == y)),
                    Ne => return Some(self.boolc(x != y)),
                    Lt => return Some(self.boolc(x < y)),
                    Le => return Some(self.boolc(x <= y)),
                    Gt => return Some(self.boolc(x > y)),
                    Ge => return Some(self.boolc(x >= y)),
                    _ => None,
                };
                if let Some(v) = v {
                    return Some(self.iconst(ty, v));
                }
            }
        }
        // Float constant folding of the exact IEEE operations.
        if let (Some(x), Some(y)) = (self.as_float_const(a), self.as_float_const(b)) {
            let v = if ty == DType::F32 {
                let (x, y) = (x as f32, y as f32);
                match op {
                    Add => Some((x + y) as f64),
                    Sub => Some((x - y) as f64),
                    Mul => Some((x * y) as f64),
                    Div => Some((x / y) as f64),
                    _ => None,
                }
            } else {
                match op {
                    Add => Some(x + y),
                    Sub => Some(x - y),
                    Mul => Some(x * y),
                    Div => Some(x / y),
                    _ => None,
                }
            };
            if let Some(v) = v {
                return Some(self.fconst(ty, v));
            }
        }
        let is_int = !ty.is_float() && ty != DType::Bool;
        let ca = self.as_int_const(a);
        let cb = self.as_int_const(b);
        match op {
            Add if is_int && cb == Some(0) => return Some(a),
            Add if is_int && ca == Some(0) => return Some(b),
            Sub if is_int && cb == Some(0) => return Some(a),
            Sub if is_int && a == b => return Some(self.iconst(ty, 0)),
            Mul if is_int && cb == Some(1) => return Some(a),
            Mul if is_int && ca == Some(1) => return Some(b),
            Mul if is_int && (ca == Some(0) || cb == Some(0)) => return Some(self.iconst(ty, 0)),
            Div if is_int && cb == Some(1) => return Some(a),
            Rem if is_int && cb == Some(1) => return Some(self.iconst(ty, 0)),
            And if ty == DType::Bool => {
                if ca == Some(1) {
                    return Some(b);
                }
                if cb == Some(1) {
                    return Some(a);
                }
                if ca == Some(0) || cb == Some(0) {
                    return Some(self.boolc(false));
                }
            }
            Or if ty == DType::Bool => {
                if ca == Some(0) {
                    return Some(b);
                }
                if cb == Some(0) {
                    return Some(a);
                }
                if ca == Some(1) || cb == Some(1) {
                    return Some(self.boolc(true));
                }
            }
            _ => {}
        }
        // Interval reasoning on signed integers.
        if ty == DType::I64 || ty == DType::I32 {
            if let (Some((alo, ahi)), Some((blo, bhi))) = (self.range(a), self.range(b)) {
                let decided = match op {
                    Lt if ahi < blo => Some(true),
                    Lt if alo >= bhi => Some(false),
                    Le if ahi <= blo => Some(true),
                    Le if alo > bhi => Some(false),
                    Gt if alo > bhi => Some(true),
                    Gt if ahi <= blo => Some(false),
                    Ge if alo >= bhi => Some(true),
                    Ge if ahi < blo => Some(false),
                    Eq if ahi < blo || alo > bhi => Some(false),
                    Ne if ahi < blo || alo > bhi => Some(true),
                    _ => None,
                };
                if let Some(v) = decided {
                    return Some(self.boolc(v));
                }
                match op {
                    Min if ahi <= blo => return Some(a),
                    Min if bhi <= alo => return Some(b),
                    Max if alo >= bhi => return Some(a),
                    Max if blo >= ahi => return Some(b),
                    _ => {}
                }
                if matches!(op, Div | Rem) && blo == bhi && blo > 0 && alo >= 0 {
                    return self.simplify_divrem(op, a, blo, ty);
                }
            }
            if matches!(op, Add | Sub) {
                return self.merge_divrem(op, a, b, ty);
            }
        }
        None
    }

    /// `(x / c) * c * s + (x % c) * s == x * s` for `x >= 0`, `c > 0`: an unflattened index
    /// flattened again (a fused reader of a reshaped value) folds back to the original index.
    fn merge_divrem(&mut self, op: KBinary, a: E, b: E, ty: DType) -> Option<E> {
        let (mut terms, mut k) = self.linear(a)?;
        let (tb, kb) = self.linear(b)?;
        let sign = if op == KBinary::Sub { -1 } else { 1 };
        if terms.len() + tb.len() > 12 || !terms.iter().chain(&tb).any(|t| matches!(self.node(t.0), Expr::Binary(KBinary::Rem, ..))) {
            return None;
        }
        for (atom, coef) in tb {
            let coef = coef.checked_mul(sign)?;
            match terms.iter_mut().find(|t| t.0 == atom) {
                Some(t) => t.1 = t.1.checked_add(coef)?,
                None => terms.push((atom, coef)),
            }
        }
        k = k.checked_add(kb.checked_mul(sign)?)?;
        let mut merged = false;
        let mut i = 0;
        while i < terms.len() {
            let (atom, coef) = terms[i];
            if let Expr::Binary(KBinary::Rem, x, c) = *self.node(atom) {
                let c = self.as_int_const(c).filter(|&c| c > 0);
                let div = c.and_then(|c| {
                    terms.iter().position(|t| {
                        matches!(*self.node(t.0), Expr::Binary(KBinary::Div, x2, c2) if x2 == x && self.as_int_const(c2) == Some(c))
                            && coef.checked_mul(c) == Some(t.1)
                    })
                });
                if let (Some(j), true) = (div, self.range(x).is_some_and(|r| r.0 >= 0)) {
                    terms[i] = (x, coef);
                    terms.remove(j);
                    merged = true;
                    i = 0;
                    continue;
                }
            }
            i += 1;
        }
        if !merged {
            return None;
        }
        terms.retain(|t| t.1 != 0);
        Some(self.from_linear(&terms, k, ty))
    }

    /// `a / c` and `a % c` for `a >= 0`, `c > 0`: split `a` into multiples of `c` plus a rest.
    fn simplify_divrem(&mut self, op: KBinary, a: E, c: i64, ty: DType) -> Option<E> {
        let (alo, ahi) = self.range(a)?;
        if ahi < c {
            return Some(if op == KBinary::Div { self.iconst(ty, 0) } else { a });
        }
        // (x / p) / q == x / (p*q) for x >= 0.
        if op == KBinary::Div {
            if let Expr::Binary(KBinary::Div, x, p) = *self.node(a) {
                if let Some(p) = self.as_int_const(p) {
                    if p > 0 && self.range(x).is_some_and(|r| r.0 >= 0) {
                        let pq = self.iconst(ty, p.checked_mul(c)?);
                        return Some(self.binary(KBinary::Div, x, pq));
                    }
                }
            }
        }
        let _ = alo;
        let (terms, k) = self.linear(a)?;
        let mut q_terms = vec![];
        let mut r_terms = vec![];
        for (atom, coef) in terms {
            if coef % c == 0 {
                q_terms.push((atom, coef / c));
            } else {
                r_terms.push((atom, coef));
            }
        }
        let (kq, kr) = (k.div_euclid(c), k.rem_euclid(c));
        if q_terms.is_empty() && kq == 0 {
            return self.divrem_by_factor(op, a, c, ty);
        }
        let rest = self.from_linear(&r_terms, kr, ty);
        let (rlo, rhi) = self.range(rest)?;
        if rlo < 0 {
            return None;
        }
        if op == KBinary::Rem {
            return Some(if rhi < c {
                rest
            } else {
                self.divrem_by_factor(KBinary::Rem, rest, c, ty).unwrap_or_else(|| self.binary_raw(KBinary::Rem, rest, c, ty))
            });
        }
        let q = self.from_linear(&q_terms, kq, ty);
        if rhi < c {
            Some(q)
        } else {
            let r = self.divrem_by_factor(KBinary::Div, rest, c, ty).unwrap_or_else(|| self.binary_raw(KBinary::Div, rest, c, ty));
            Some(self.binary(KBinary::Add, q, r))
        }
    }

    /// `a = d * hi + lo` with `0 <= lo < d` and `d | c` (a row-major index whose low digits
    /// stay below `d`): `a / c = hi / (c / d)` and `a % c = (hi % (c / d)) * d + lo`. Turns the
    /// index arithmetic of reshapes and transposes back into per-axis indices.
    fn divrem_by_factor(&mut self, op: KBinary, a: E, c: i64, ty: DType) -> Option<E> {
        let (terms, k) = self.linear(a)?;
        let mut factors: Vec<i64> = terms.iter().map(|t| t.1).filter(|&d| d > 1 && d < c && c % d == 0).collect();
        factors.sort_unstable_by(|x, y| y.cmp(x));
        factors.dedup();
        for d in factors {
            let (hi, lo): (Vec<(E, i64)>, Vec<(E, i64)>) = terms.iter().partition(|t| t.1 % d == 0);
            let (kq, kr) = (k.div_euclid(d), k.rem_euclid(d));
            let lo_e = self.from_linear(&lo, kr, ty);
            match self.range(lo_e) {
                Some((l, h)) if l >= 0 && h < d => {}
                _ => continue,
            }
            let hi_terms: Vec<(E, i64)> = hi.iter().map(|t| (t.0, t.1 / d)).collect();
            let hi_e = self.from_linear(&hi_terms, kq, ty);
            if !self.range(hi_e).is_some_and(|r| r.0 >= 0) {
                continue;
            }
            let cd = self.iconst(ty, c / d);
            return Some(if op == KBinary::Div {
                self.binary(KBinary::Div, hi_e, cd)
            } else {
                let r = self.binary(KBinary::Rem, hi_e, cd);
                let dd = self.iconst(ty, d);
                let r = self.binary(KBinary::Mul, r, dd);
                self.binary(KBinary::Add, r, lo_e)
            });
        }
        None
    }

    fn binary_raw(&mut self, op: KBinary, a: E, c: i64, ty: DType) -> E {
        let cc = self.iconst(ty, c);
        let range = self.binary_range(op, a, cc, ty);
        self.intern(Expr::Binary(op, a, cc), ty, range)
    }

    /// `a` as `sum(coef * atom) + k` when it is built from adds, subs and constant multiples.
    fn linear(&self, a: E) -> Option<(Vec<(E, i64)>, i64)> {
        let mut terms: Vec<(E, i64)> = vec![];
        let mut k = 0i64;
        self.linear_into(a, 1, &mut terms, &mut k)?;
        terms.retain(|t| t.1 != 0);
        Some((terms, k))
    }

    fn linear_into(&self, a: E, scale: i64, terms: &mut Vec<(E, i64)>, k: &mut i64) -> Option<()> {
        match *self.node(a) {
            Expr::Const(..) => *k = k.checked_add(self.as_int_const(a)?.checked_mul(scale)?)?,
            Expr::Binary(KBinary::Add, x, y) => {
                self.linear_into(x, scale, terms, k)?;
                self.linear_into(y, scale, terms, k)?;
            }
            Expr::Binary(KBinary::Sub, x, y) => {
                self.linear_into(x, scale, terms, k)?;
                self.linear_into(y, scale.checked_neg()?, terms, k)?;
            }
            Expr::Binary(KBinary::Mul, x, y) if self.as_int_const(y).is_some() => {
                self.linear_into(x, scale.checked_mul(self.as_int_const(y)?)?, terms, k)?;
            }
            Expr::Binary(KBinary::Mul, x, y) if self.as_int_const(x).is_some() => {
                self.linear_into(y, scale.checked_mul(self.as_int_const(x)?)?, terms, k)?;
            }
            _ => {
                if let Some(t) = terms.iter_mut().find(|t| t.0 == a) {
                    t.1 = t.1.checked_add(scale)?;
                } else {
                    terms.push((a, scale));
                }
            }
        }
        Some(())
    }

    fn from_linear(&mut self, terms: &[(E, i64)], k: i64, ty: DType) -> E {
        let mut acc = self.iconst(ty, k);
        for &(atom, coef) in terms {
            let c = self.iconst(ty, coef);
            let t = self.binary(KBinary::Mul, atom, c);
            acc = self.binary(KBinary::Add, acc, t);
        }
        acc
    }

    fn binary_range(&self, op: KBinary, a: E, b: E, ty: DType) -> Option<(i64, i64)> {
        use KBinary::*;
        if op.is_compare() {
            return Some((0, 1));
        }
        if ty == DType::Bool {
            return Some((0, 1));
        }
        if !(ty == DType::I64 || ty == DType::I32) {
            return None;
        }
        let (alo, ahi) = self.range(a)?;
        let (blo, bhi) = self.range(b)?;
        let r = match op {
            Add => (alo.checked_add(blo)?, ahi.checked_add(bhi)?),
            Sub => (alo.checked_sub(bhi)?, ahi.checked_sub(blo)?),
            Mul => {
                let p = [sat_mul(alo, blo), sat_mul(alo, bhi), sat_mul(ahi, blo), sat_mul(ahi, bhi)];
                let (lo, hi) = (*p.iter().min()?, *p.iter().max()?);
                if lo == i64::MIN || hi == i64::MAX {
                    return None;
                }
                (lo, hi)
            }
            Div if blo == bhi && blo > 0 && alo >= 0 => (alo / blo, ahi / blo),
            Rem if blo == bhi && blo > 0 && alo >= 0 => (0, ahi.min(blo - 1)),
            Min => (alo.min(blo), ahi.min(bhi)),
            Max => (alo.max(blo), ahi.max(bhi)),
            _ => return None,
        };
        let r = clamp_range(ty, r)?;
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_index_arithmetic_folds_to_axis_indices() {
        let mut kb = KernelBuilder::new();
        let (c, y, x) = (kb.var(112), kb.var(56), kb.var(56));
        let (c, y, x) = (kb.var_expr(c), kb.var_expr(y), kb.var_expr(x));
        let flat = kb.flat_index(&[c, y, x], &[112, 56, 56]);
        let big = kb.i64c(12544);
        let four = kb.i64c(4);
        let q = kb.div(flat, big);
        let c4 = kb.div(c, four);
        assert_eq!(q, c4);
        // (c / 4) * 4 + c % 4 == c
        let r = kb.binary(KBinary::Rem, c, four);
        let back = kb.mul_c(c4, 4);
        let back = kb.add(back, r);
        assert_eq!(back, c);
    }
}
