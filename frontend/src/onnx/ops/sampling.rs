//! Spatial sampling: GridSample (nearest, linear, cubic; zeros/border/reflection padding) and
//! AffineGrid, as gathers with computed coordinates.

use super::{one, R};
use crate::onnx::{Importer, NodeCtx};
use crate::FrontendError;
use odc_ir::{BinaryOp, DType, NodeId, Op, Tensor, UnaryOp};
use odc_passes::Builder;

fn inval(msg: impl Into<String>) -> FrontendError {
    FrontendError::Invalid(msg.into())
}

/// Reflect float coordinates into `[lo, hi]` by repeated mirroring (the reference's `_gs_reflect`).
fn reflect(b: &mut Builder, x: NodeId, lo: f64, hi: f64) -> Result<NodeId, FrontendError> {
    let dt = b.dtype(x);
    let rng = hi - lo;
    let loc = b.scalar(dt, lo)?;
    let hic = b.scalar(dt, hi)?;
    let below = b.binary(BinaryOp::Lt, x, loc)?;
    let above = b.binary(BinaryOp::Gt, x, hic)?;
    // distance past the violated border
    let dlo = b.sub(loc, x)?;
    let dhi = b.sub(x, hic)?;
    let dx = b.select(below, dlo, dhi)?;
    let q = b.binary_c(BinaryOp::Div, dx, rng)?;
    let nfl = b.unary(UnaryOp::Floor, q)?;
    let r = b.binary_c(BinaryOp::Mul, nfl, rng)?;
    let r = b.sub(dx, r)?;
    let half = b.binary_c(BinaryOp::Mul, nfl, 0.5)?;
    let hf = b.unary(UnaryOp::Floor, half)?;
    let even = b.binary(BinaryOp::Eq, hf, half)?;
    let lo_r = b.binary_c(BinaryOp::Add, r, lo)?;
    let nr = b.unary(UnaryOp::Neg, r)?;
    let hi_r = b.binary_c(BinaryOp::Add, nr, hi)?;
    // below: even -> lo + r, odd -> hi - r; above: even -> hi - r, odd -> lo + r
    let from_below = b.select(even, lo_r, hi_r)?;
    let from_above = b.select(even, hi_r, lo_r)?;
    let out = b.select(above, from_above, x)?;
    Ok(b.select(below, from_below, out)?)
}

fn cubic_coeffs(b: &mut Builder, t: NodeId) -> Result<Vec<NodeId>, FrontendError> {
    let a = -0.75;
    let dt = b.dtype(t);
    let one = b.scalar(dt, 1.0)?;
    let two = b.scalar(dt, 2.0)?;
    // far: ((a*(x) - 5a)*x + 8a)*x - 4a for x in (1, 2); near: ((a+2)x - (a+3))x^2 + 1
    let far = |b: &mut Builder, x: NodeId| -> Result<NodeId, FrontendError> {
        let p = b.binary_c(BinaryOp::Mul, x, a)?;
        let p = b.binary_c(BinaryOp::Add, p, -5.0 * a)?;
        let p = b.mul(p, x)?;
        let p = b.binary_c(BinaryOp::Add, p, 8.0 * a)?;
        let p = b.mul(p, x)?;
        Ok(b.binary_c(BinaryOp::Add, p, -4.0 * a)?)
    };
    let near = |b: &mut Builder, x: NodeId| -> Result<NodeId, FrontendError> {
        let p = b.binary_c(BinaryOp::Mul, x, a + 2.0)?;
        let p = b.binary_c(BinaryOp::Add, p, -(a + 3.0))?;
        let p = b.mul(p, x)?;
        let p = b.mul(p, x)?;
        Ok(b.binary_c(BinaryOp::Add, p, 1.0)?)
    };
    let t1 = b.add2(t, one)?;
    let c0 = far(b, t1)?;
    let c1 = near(b, t)?;
    let omt = b.sub(one, t)?;
    let c2 = near(b, omt)?;
    let tmt = b.sub(two, t)?;
    let c3 = far(b, tmt)?;
    Ok(vec![c0, c1, c2, c3])
}

pub fn grid_sample(imp: &mut Importer, n: &NodeCtx) -> R {
    let (x, grid) = (n.input(0)?, n.input(1)?);
    let b = &mut imp.b;
    let xs = b.shape(x);
    let gs = b.shape(grid);
    let sp = xs.len() - 2;
    if sp < 1 || gs.len() != xs.len() || gs[gs.len() - 1] != sp || gs[0] != xs[0] {
        return Err(inval(format!("GridSample needs X [N,C,spatial..] and grid [N,out..,{sp}], got {xs:?} and {gs:?}")));
    }
    let align = n.attr_i("align_corners", 0) != 0;
    let mode = n.attr_s("mode", if n.opset >= 20 { "linear" } else { "bilinear" });
    let padding = n.attr_s("padding_mode", "zeros");
    let (nn, c) = (xs[0], xs[1]);
    let dims = &xs[2..];
    let out_sp: Vec<usize> = gs[1..gs.len() - 1].to_vec();
    let p: usize = out_sp.iter().product();
    let work = if b.dtype(x) == DType::F64 { DType::F64 } else { DType::F32 };
    let g = b.cast(grid, work)?;
    let g = b.reshape(g, &[nn, p, sp])?;
    // Coordinates per spatial dim (grid's last axis is x, y(, z): reversed dims order).
    let mut coords = vec![];
    for (i, &d) in dims.iter().enumerate() {
        let gi = b.slice_axis(g, 2, (sp - 1 - i) as i64, 1, 1)?;
        let gi = b.reshape(gi, &[nn, p])?;
        let df = d as f64;
        let xi = if align {
            let t = b.binary_c(BinaryOp::Add, gi, 1.0)?;
            b.binary_c(BinaryOp::Mul, t, (df - 1.0) / 2.0)?
        } else {
            let t = b.binary_c(BinaryOp::Add, gi, 1.0)?;
            let t = b.binary_c(BinaryOp::Mul, t, df)?;
            let t = b.binary_c(BinaryOp::Sub, t, 1.0)?;
            b.binary_c(BinaryOp::Mul, t, 0.5)?
        };
        coords.push(xi);
    }
    let nearest = mode == "nearest";
    let cubic = matches!(mode.as_str(), "cubic" | "bicubic");
    if !(nearest || cubic || matches!(mode.as_str(), "linear" | "bilinear")) {
        return n.unsupported(format!("GridSample mode '{mode}'"));
    }
    // Borders, and border/reflection handling of coordinates outside them.
    let mut borders = vec![];
    for (i, &d) in dims.iter().enumerate() {
        let (lo, hi) = if align { (0.0, d as f64 - 1.0) } else { (-0.5, d as f64 - 0.5) };
        borders.push((lo, hi));
        if nearest {
            coords[i] = b.unary(UnaryOp::Round, coords[i])?;
        }
        let ci = coords[i];
        coords[i] = match padding.as_str() {
            "zeros" => ci,
            "border" => {
                let lo_c = b.scalar(work, lo)?;
                let hi_c = b.scalar(work, hi)?;
                let out = b.binary(BinaryOp::Lt, ci, lo_c)?;
                let out2 = b.binary(BinaryOp::Gt, ci, hi_c)?;
                let out = b.binary(BinaryOp::Or, out, out2)?;
                let z = b.scalar(work, 0.0)?;
                let top = b.scalar(work, d as f64 - 1.0)?;
                let cl = b.max(ci, z)?;
                let cl = b.min(cl, top)?;
                b.select(out, cl, ci)?
            }
            "reflection" => reflect(b, ci, lo, hi)?,
            other => return n.unsupported(format!("GridSample padding_mode '{other}'")),
        };
    }
    // Taps per dimension: (integer index, weight).
    let mut taps: Vec<Vec<(NodeId, Option<NodeId>)>> = vec![];
    for ci in coords.iter() {
        let mut t = vec![];
        if nearest {
            t.push((b.cast(*ci, DType::I64)?, None));
        } else {
            let f = b.unary(UnaryOp::Floor, *ci)?;
            let frac = b.sub(*ci, f)?;
            let fi = b.cast(f, DType::I64)?;
            let (offs, ws): (Vec<i64>, Vec<NodeId>) = if cubic {
                (vec![-1, 0, 1, 2], cubic_coeffs(b, frac)?)
            } else {
                let one = b.scalar(work, 1.0)?;
                (vec![0, 1], vec![b.sub(one, frac)?, frac])
            };
            for (o, w) in offs.into_iter().zip(ws) {
                t.push((b.binary_c(BinaryOp::Add, fi, o as f64)?, Some(w)));
            }
        }
        taps.push(t);
    }
    let xf = b.cast(x, work)?;
    let total: usize = dims.iter().product();
    let xflat = b.reshape(xf, &[nn, c, total])?;
    let mut acc: Option<NodeId> = None;
    let counts: Vec<usize> = taps.iter().map(|t| t.len()).collect();
    let combos: usize = counts.iter().product();
    for combo in 0..combos {
        let mut rem = combo;
        let mut flat: Option<NodeId> = None;
        let mut weight: Option<NodeId> = None;
        let mut valid: Option<NodeId> = None;
        for (i, &d) in dims.iter().enumerate().rev() {
            let k = rem % counts[i];
            rem /= counts[i];
            let (idx, w) = taps[i][k];
            let di = d as i64;
            let z = b.scalar(DType::I64, 0.0)?;
            let top = b.scalar(DType::I64, (di - 1) as f64)?;
            let idx = match padding.as_str() {
                "zeros" => {
                    let ge = b.binary(BinaryOp::Ge, idx, z)?;
                    let le = b.binary(BinaryOp::Le, idx, top)?;
                    let ok = b.binary(BinaryOp::And, ge, le)?;
                    valid = Some(match valid {
                        None => ok,
                        Some(v) => b.binary(BinaryOp::And, v, ok)?,
                    });
                    idx
                }
                "border" => idx,
                _ => {
                    // reflect integer taps, then truncate
                    let f = b.cast(idx, work)?;
                    let (lo, hi) = borders[i];
                    let r = reflect(b, f, lo, hi)?;
                    b.cast(r, DType::I64)?
                }
            };
            let cl = b.max(idx, z)?;
            let cl = b.min(cl, top)?;
            let stride: usize = dims[i + 1..].iter().product();
            let part = b.binary_c(BinaryOp::Mul, cl, stride as f64)?;
            flat = Some(match flat {
                None => part,
                Some(f) => b.add2(f, part)?,
            });
            if let Some(w) = w {
                weight = Some(match weight {
                    None => w,
                    Some(ww) => b.mul(ww, w)?,
                });
            }
        }
        let flat = flat.expect("at least one spatial dim");
        let fi = b.reshape(flat, &[nn, 1, p])?;
        let fi = b.expand(fi, &[nn, c, p])?;
        let mut v = b.add(Op::GatherElements { axis: 2 }, &[xflat, fi])?;
        if let Some(ok) = valid {
            let okr = b.reshape(ok, &[nn, 1, p])?;
            let z = b.scalar(work, 0.0)?;
            v = b.select(okr, v, z)?;
        }
        if let Some(w) = weight {
            let wr = b.reshape(w, &[nn, 1, p])?;
            v = b.mul(v, wr)?;
        }
        acc = Some(match acc {
            None => v,
            Some(a) => b.add2(a, v)?,
        });
    }
    let mut oshape = vec![nn, c];
    oshape.extend(&out_sp);
    let y = b.reshape(acc.expect("taps"), &oshape)?;
    one(b.cast(y, b.dtype(x))?)
}

pub fn affine_grid(imp: &mut Importer, n: &NodeCtx) -> R {
    let theta = n.input(0)?;
    let b = &mut imp.b;
    let size = b.const_ints(n.input(1)?, "AffineGrid size")?;
    let align = n.attr_i("align_corners", 0) != 0;
    let sp = size.len() - 2;
    if !(sp == 2 || sp == 3) || b.shape(theta) != vec![size[0] as usize, sp, sp + 1] {
        return Err(inval("AffineGrid needs theta [N, 2, 3] with size [N, C, H, W] (or the 3-D equivalents)"));
    }
    let dims: Vec<usize> = size[2..].iter().map(|&d| d as usize).collect();
    let coord = |i: usize, d: usize| -> f64 {
        if align {
            if d == 1 {
                -1.0
            } else {
                -1.0 + 2.0 * i as f64 / (d - 1) as f64
            }
        } else {
            -1.0 + (2 * i + 1) as f64 / d as f64
        }
    };
    // Homogeneous base grid rows (x, y[, z], 1) in row-major order of the output positions.
    let total: usize = dims.iter().product();
    let mut v = Vec::with_capacity(total * (sp + 1));
    for flat in 0..total {
        let mut rem = flat;
        let mut idx = vec![0; sp];
        for a in (0..sp).rev() {
            idx[a] = rem % dims[a];
            rem /= dims[a];
        }
        for a in (0..sp).rev() {
            v.push(coord(idx[a], dims[a]));
        }
        v.push(1.0);
    }
    let dt = b.dtype(theta);
    let base = b.constant(Tensor::from_f64_as(dt, vec![1, total, sp + 1], &v)?);
    let tt = b.transpose(theta, &[0, 2, 1])?;
    let g = b.matmul(base, tt)?;
    let mut oshape = vec![size[0] as usize];
    oshape.extend(&dims);
    oshape.push(sp);
    one(b.reshape(g, &oshape)?)
}
