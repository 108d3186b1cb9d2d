//! Element-wise kernels of the encoder's forward pass: GELU and row softmax.
//!
//! candle evaluates these with one scalar libm call (`erff`, `expf`) per element; in a
//! small encoder such as MiniLM they cost as much time as the matrix products. Here they
//! use polynomial approximations written branch-free so the compiler vectorises them, with
//! one copy per instruction set chosen at run time (AVX-512, AVX2+FMA, baseline).
//! Accuracy: exp relative error < 2e-7 (Cephes polynomial), erf absolute error < 4e-7
//! (Abramowitz & Stegun 7.1.26 in f32), far below the 1e-5 cosine budget of the parity tests.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use multiversion::multiversion;
use rayon::prelude::*;

/// e^x for x in the f32 range; inputs below −87 give ~1e-38 rather than 0, which is
/// negligible in a softmax.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// erf(x) with absolute error below 4e-7 (1.5e-7 from the approximation, the rest f32 rounding).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma"
))]
fn gelu_slice(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

#[multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512dq+avx512vl+avx2+fma",
    "x86_64+avx2+fma"
))]
fn softmax_rows(xs: &mut [f32], width: usize) {
    for row in xs.chunks_exact_mut(width) {
        let max = lanes_reduce(row, f32::NEG_INFINITY, |a, b| if a > b { a } else { b });
        row.iter_mut().for_each(|x| *x = exp(*x - max));
        let inv = 1.0 / lanes_reduce(row, 0.0, |a, b| a + b);
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Reduces with 16 independent lanes so the loop vectorises (a single running value
/// would serialise on the floating-point dependency chain).
#[inline(always)]
fn lanes_reduce(xs: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; 16];
    let chunks = xs.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            lanes[i] = f(lanes[i], c[i]);
        }
    }
    tail.iter().chain(lanes.iter()).fold(init, |a, &b| f(a, b))
}

/// Elements handed to one rayon task: large enough to amortise scheduling.
const CHUNK: usize = 1 << 15;

fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 is supported")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: input must be contiguous")
    };
    Ok(&data[start..end])
}

/// GELU (the exact, erf-based form) as a candle op.
pub struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "ksparse-gelu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let mut out = contiguous_f32(storage, layout, self.name())?.to_vec();
        out.par_chunks_mut(CHUNK).for_each(gelu_slice);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Attention probabilities: softmax over keys of `scores + bias`, for scores shaped
/// batch × heads × len × len. The bias is the padding mask of each batch row's keys
/// (batch × len; 0 or a large negative) plus, for MPNet, the relative-position bias
/// (heads × len × len). Fusing the bias into the softmax saves a full pass and a
/// batch × heads × len² buffer per layer.
pub struct AttentionSoftmax<'a> {
    /// batch × len additive key mask.
    pub key_bias: &'a [f32],
    /// heads × len × len additive bias, or `None`.
    pub position_bias: Option<&'a [f32]>,
}

impl CustomOp1 for AttentionSoftmax<'_> {
    fn name(&self) -> &'static str {
        "ksparse-attention-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, heads, len, len2) = layout.shape().dims4()?;
        if len != len2 || self.key_bias.len() != batch * len {
            candle_core::bail!(
                "{}: scores {:?} do not match a key mask of {}",
                self.name(),
                layout.shape(),
                self.key_bias.len()
            );
        }
        if self
            .position_bias
            .is_some_and(|p| p.len() != heads * len * len)
        {
            candle_core::bail!(
                "{}: position bias does not match {heads} heads × {len}²",
                self.name()
            );
        }
        let mut out = contiguous_f32(storage, layout, self.name())?.to_vec();
        // One task per (batch row, head): a len × len block sharing one key mask.
        out.par_chunks_mut(len * len)
            .enumerate()
            .for_each(|(block, scores)| {
                let (b, h) = (block / heads, block % heads);
                let mask = &self.key_bias[b * len..(b + 1) * len];
                for (i, row) in scores.chunks_exact_mut(len).enumerate() {
                    add_row(row, mask);
                    if let Some(p) = self.position_bias {
                        add_row(row, &p[(h * len + i) * len..(h * len + i + 1) * len]);
                    }
                }
                softmax_rows(scores, len);
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[inline(always)]
fn add_row(row: &mut [f32], bias: &[f32]) {
    row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.04;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn erf_and_gelu_are_accurate() {
        let mut xs: Vec<f32> = (-800..=800).map(|i| i as f32 * 0.01).collect();
        let inputs = xs.clone();
        gelu_slice(&mut xs);
        for (x, g) in inputs.iter().zip(&xs) {
            let want = 0.5 * (*x as f64) * (1.0 + libm::erf(*x as f64 / std::f64::consts::SQRT_2));
            assert!(
                (*g as f64 - want).abs() < 2e-6,
                "gelu({x}) = {g}, want {want}"
            );
            assert!(
                (erf(*x) as f64 - libm::erf(*x as f64)).abs() < 4e-7,
                "erf({x})"
            );
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_mask() {
        // Through the candle op: the key mask removes the last key of the second row.
        let scores = candle_core::Tensor::from_vec(
            vec![0.0f32, 0.0, 5.0, 0.0],
            (1, 1, 2, 2),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let key_bias = [0.0, 0.0];
        let pos = [0.0, 0.0, 0.0, -1.0e30];
        let p = scores
            .apply_op1_no_bwd(&AttentionSoftmax {
                key_bias: &key_bias,
                position_bias: Some(&pos),
            })
            .unwrap();
        let p: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            (p[0] - 0.5).abs() < 1e-6 && (p[2] - 1.0).abs() < 1e-6 && p[3] < 1e-30,
            "{p:?}"
        );

        let mut xs = vec![1.0, 2.0, 3.0, -1.0e30, 0.0, 0.0, 0.0, 0.0];
        softmax_rows(&mut xs, 4);
        let first: f32 = xs[..4].iter().sum();
        assert!((first - 1.0).abs() < 1e-6 && xs[3] < 1e-30);
        let e = [1f64.exp(), 2f64.exp(), 3f64.exp()];
        let s: f64 = e.iter().sum();
        assert!((xs[2] as f64 - e[2] / s).abs() < 1e-6);
        assert!(xs[4..].iter().all(|x| (x - 0.25).abs() < 1e-6));
    }
}
