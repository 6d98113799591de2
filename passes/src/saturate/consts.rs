//! Arithmetic on small f32 constants for rules that create new constants (scale folding,
//! reassociation). Only IEEE-exact single operations (+, -, *, /, negation), so the result is
//! bit-identical to what the generated code would compute.

use odc_ir::{broadcast_shapes, BinaryOp, DType, Tensor};

/// `a op b` with numpy broadcasting, for f32 tensors.
pub fn binary_f32(op: BinaryOp, a: &Tensor, b: &Tensor) -> Option<Tensor> {
    if a.dtype != DType::F32 || b.dtype != DType::F32 {
        return None;
    }
    let f: fn(f32, f32) -> f32 = match op {
        BinaryOp::Add => |x, y| x + y,
        BinaryOp::Sub => |x, y| x - y,
        BinaryOp::Mul => |x, y| x * y,
        BinaryOp::Div => |x, y| x / y,
        _ => return None,
    };
    let shape = broadcast_shapes(&[&a.shape, &b.shape]).ok()?;
    let (av, bv) = (a.f32_values().ok()?, b.f32_values().ok()?);
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let (ia, ib) = (Strides::new(&a.shape, &shape), Strides::new(&b.shape, &shape));
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        out.push(f(av[ia.offset(&idx)], bv[ib.offset(&idx)]));
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Some(Tensor::from_f32_vec(shape, out))
}

/// `-a` for an f32 tensor.
pub fn neg_f32(a: &Tensor) -> Option<Tensor> {
    if a.dtype != DType::F32 {
        return None;
    }
    let v: Vec<f32> = a.f32_values().ok()?.iter().map(|x| -x).collect();
    Some(Tensor::from_f32_vec(a.shape.clone(), v))
}

/// True when every element of `t` equals `v` (any numeric dtype).
pub fn is_splat_of(t: &Tensor, v: f64) -> bool {
    if t.dtype.is_packed() || t.num_elements() == 0 {
        return false;
    }
    (0..t.num_elements()).all(|i| t.get_f64(i).map(|x| x == v).unwrap_or(false))
}

/// Broadcast-aware strides of a tensor of `shape` read at indices of `out` (right-aligned).
struct Strides(Vec<usize>);

impl Strides {
    fn new(shape: &[usize], out: &[usize]) -> Self {
        let off = out.len() - shape.len();
        let mut st = vec![0; out.len()];
        let mut s = 1;
        for i in (0..shape.len()).rev() {
            st[i + off] = if shape[i] == 1 { 0 } else { s };
            s *= shape[i];
        }
        Strides(st)
    }
    fn offset(&self, idx: &[usize]) -> usize {
        idx.iter().zip(&self.0).map(|(i, s)| i * s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_matches_numpy() {
        let a = Tensor::from_f32(vec![2, 1], &[1.0, 2.0]);
        let b = Tensor::from_f32(vec![3], &[10.0, 20.0, 30.0]);
        let c = binary_f32(BinaryOp::Add, &a, &b).unwrap();
        assert_eq!(c.shape, vec![2, 3]);
        assert_eq!(c.f32_values().unwrap(), vec![11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
    }
}
