//! Small dense kernels for the encoder: a·bᵀ through gemm (AVX-512 when present, all
//! threads), row-wise bias subtraction, axpy, and top-k index selection.

use rayon::prelude::*;

/// a (n × k, row-major) times bᵀ, b (m × k, row-major): n × m, row-major.
pub fn matmul_bt(a: &[f32], n: usize, k: usize, b: &[f32], m: usize) -> Vec<f32> {
    let mut out = Vec::new();
    matmul_bt_into(a, n, k, b, m, &mut out);
    out
}

/// [`matmul_bt`] into `out` (resized to n × m; its allocation is reused).
pub fn matmul_bt_into(a: &[f32], n: usize, k: usize, b: &[f32], m: usize, out: &mut Vec<f32>) {
    assert_eq!(a.len(), n * k, "lhs size");
    assert_eq!(b.len(), m * k, "rhs size");
    out.resize(n * m, 0.0);
    if n == 0 || m == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the pointers cover n×k, m×k and n×m f32 values (asserted above) with the
    // strides given: lhs row-major (row stride k), rhs read as bᵀ (element (p, j) at
    // b[j*k + p]), dst row-major (row stride m). `read_dst = false` ignores dst's contents.
    unsafe {
        gemm::gemm(
            n,
            m,
            k,
            out.as_mut_ptr(),
            1,
            m as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Each row of x (n × len(bias)) minus `bias`.
pub fn sub_rows(x: &[f32], n: usize, bias: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), n * bias.len(), "matrix size");
    let mut out = x.to_vec();
    sub_rows_in_place(&mut out, bias);
    out
}

/// Subtracts `bias` from each row of x (rows of len(bias)).
pub fn sub_rows_in_place(x: &mut [f32], bias: &[f32]) {
    if !bias.is_empty() {
        x.par_chunks_mut(bias.len())
            .for_each(|r| r.iter_mut().zip(bias).for_each(|(v, b)| *v -= b));
    }
}

/// y += a · x.
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_bt_matches_naive() {
        let (n, k, m) = (5, 7, 3);
        let a: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.3).sin()).collect();
        let b: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.7).cos()).collect();
        let c = matmul_bt(&a, n, k, &b, m);
        for i in 0..n {
            for j in 0..m {
                let want: f32 = (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum();
                assert!((c[i * m + j] - want).abs() < 1e-5);
            }
        }
    }
}
