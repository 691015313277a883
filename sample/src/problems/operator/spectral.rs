//! A linear operator's singular value decomposition A = U Σ Vᵀ in closed form, as the spectral
//! methods use it (DDRM, Kawar et al. 2022, §4.1; DDNM⁺, Wang et al. 2023, §3.3): the
//! coordinates x̄ = Vᵀx of an image, the singular value sᵢ of each (0 in A's null space), and
//! ȳ = Σ⁺Uᵀy, the coordinates an observation pins down.
//!
//! Every operator here but blur has one, without an eigensolver:
//! - a mask: V = I, sᵢ = 1 on the observed pixels;
//! - the identity (denoising): V = I, sᵢ = 1;
//! - colourisation (y = wᵀx per pixel): per pixel, the Householder reflection H = I − 2uuᵀ/‖u‖²,
//!   u = w/‖w‖ − e₁, which is orthogonal, symmetric and maps e₁ to w/‖w‖, so x̄₀ = wᵀx/‖w‖ with
//!   s = ‖w‖ and the other two coordinates span the null space;
//! - block-average super-resolution by k: the same reflection on each k×k block with w = 1/k²
//!   (the block mean): s = 1/k on the block's first coordinate;
//! - a dense matrix (the Gaussian-mixture benchmark, d ≤ 4096): V and s² from the eigenvalues of
//!   AᵀA (Jacobi), Uᵀy/s = VᵀAᵀy/s².
//!
//! Blur has no closed form here (its boundary is not circular, so the FFT does not diagonalise
//! it); the spectral methods refuse it by name.

use burn::prelude::*;

use super::{AvgPool, ForwardOperator, Identity, Luminance, Mask, Matrix};

/// A = U Σ Vᵀ, with every tensor laid out like the images `[B, C, H, W]` (spectral coordinates
/// take the pixels' places).
pub trait Spectral {
    /// x̄ = Vᵀx.
    fn image_to_spectral(&self, x: Tensor<4>) -> Tensor<4>;
    /// x = V x̄.
    fn spectral_to_image(&self, v: Tensor<4>) -> Tensor<4>;
    /// sᵢ per coordinate `[1, C, H, W]` for images of `shape` (0 in the null space).
    fn singular_values(&self, shape: [usize; 3], device: &Device) -> Tensor<4>;
    /// ȳ = Σ⁺Uᵀy `[B, C, H, W]` (0 where sᵢ = 0) for images of `shape`.
    fn observed(&self, y: Tensor<4>, shape: [usize; 3]) -> Tensor<4>;
}

/// The decomposition of `op`, where it has one in closed form.
pub fn of(op: &dyn ForwardOperator) -> Option<Box<dyn Spectral>> {
    op.spectral()
}

impl Spectral for Mask {
    fn image_to_spectral(&self, x: Tensor<4>) -> Tensor<4> {
        x
    }
    fn spectral_to_image(&self, v: Tensor<4>) -> Tensor<4> {
        v
    }
    fn singular_values(&self, _shape: [usize; 3], device: &Device) -> Tensor<4> {
        self.tensor(device)
    }
    fn observed(&self, y: Tensor<4>, _shape: [usize; 3]) -> Tensor<4> {
        self.apply(y)
    }
}

impl Spectral for Identity {
    fn image_to_spectral(&self, x: Tensor<4>) -> Tensor<4> {
        x
    }
    fn spectral_to_image(&self, v: Tensor<4>) -> Tensor<4> {
        v
    }
    fn singular_values(&self, [c, h, w]: [usize; 3], device: &Device) -> Tensor<4> {
        Tensor::ones([1, c, h, w], device)
    }
    fn observed(&self, y: Tensor<4>, _shape: [usize; 3]) -> Tensor<4> {
        y
    }
}

/// The Householder vector u = q − e₁ of the reflection mapping e₁ to the unit vector q, and
/// 2/‖u‖² (0 when q = e₁: the identity).
fn householder(q: &[f64]) -> (Vec<f32>, f64) {
    let mut u: Vec<f64> = q.to_vec();
    u[0] -= 1.0;
    let n2: f64 = u.iter().map(|v| v * v).sum();
    let scale = if n2 > 1e-24 { 2.0 / n2 } else { 0.0 };
    (u.into_iter().map(|v| v as f32).collect(), scale)
}

impl Luminance {
    /// H x over the channel axis (H = Hᵀ = H⁻¹).
    fn reflect(&self, x: Tensor<4>) -> Tensor<4> {
        let norm = self.gram_scale().expect("AAᵀ = ‖w‖²").sqrt();
        let q: Vec<f64> = super::LUMINANCE_WEIGHTS.iter().map(|w| w / norm).collect();
        let (u, scale) = householder(&q);
        let u = Tensor::<4>::from_data(TensorData::new(u, [1, 3, 1, 1]), &x.device());
        let ux = (x.clone() * u.clone()).sum_dim(1);
        x - u * ux.mul_scalar(scale)
    }
}

impl Spectral for Luminance {
    fn image_to_spectral(&self, x: Tensor<4>) -> Tensor<4> {
        self.reflect(x)
    }
    fn spectral_to_image(&self, v: Tensor<4>) -> Tensor<4> {
        self.reflect(v)
    }
    fn singular_values(&self, [_, h, w]: [usize; 3], device: &Device) -> Tensor<4> {
        let s = self.gram_scale().expect("AAᵀ = ‖w‖²").sqrt() as f32;
        let v = Tensor::<4>::from_data(TensorData::new(vec![s, 0.0, 0.0], [1, 3, 1, 1]), device);
        v.expand([1, 3, h, w])
    }
    fn observed(&self, y: Tensor<4>, [_, h, w]: [usize; 3]) -> Tensor<4> {
        let s = self.gram_scale().expect("AAᵀ = ‖w‖²").sqrt();
        let b = y.dims()[0];
        let zeros = Tensor::<4>::zeros([b, 2, h, w], &y.device());
        Tensor::cat(vec![y.div_scalar(s), zeros], 1)
    }
}

impl AvgPool {
    /// H x on each k×k block (H = Hᵀ = H⁻¹), the block's first pixel holding its mean × k.
    fn reflect(&self, x: Tensor<4>) -> Tensor<4> {
        let k = self.factor;
        let [b, c, h, w] = x.dims();
        let q = vec![1.0 / k as f64; k * k];
        let (u, scale) = householder(&q);
        let u = Tensor::<6>::from_data(TensorData::new(u, [1, 1, 1, k, 1, k]), &x.device());
        let blocks = x.reshape([b, c, h / k, k, w / k, k]);
        let ux = (blocks.clone() * u.clone()).sum_dim(5).sum_dim(3);
        (blocks - u * ux.mul_scalar(scale)).reshape([b, c, h, w])
    }

    /// `[B, C, H/k, W/k]` values placed at each block's first pixel, zeros elsewhere.
    fn at_block_starts(&self, v: Tensor<4>) -> Tensor<4> {
        let k = self.factor;
        let [b, c, hk, wk] = v.dims();
        let first: Vec<f32> = (0..k * k).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect();
        let e = Tensor::<6>::from_data(TensorData::new(first, [1, 1, 1, k, 1, k]), &v.device());
        (v.reshape([b, c, hk, 1, wk, 1]) * e).reshape([b, c, hk * k, wk * k])
    }
}

impl Spectral for AvgPool {
    fn image_to_spectral(&self, x: Tensor<4>) -> Tensor<4> {
        self.reflect(x)
    }
    fn spectral_to_image(&self, v: Tensor<4>) -> Tensor<4> {
        self.reflect(v)
    }
    fn singular_values(&self, [c, h, w]: [usize; 3], device: &Device) -> Tensor<4> {
        let k = self.factor;
        let ones = Tensor::<4>::ones([1, c, h / k, w / k], device).div_scalar(k as f64);
        self.at_block_starts(ones)
    }
    fn observed(&self, y: Tensor<4>, _shape: [usize; 3]) -> Tensor<4> {
        self.at_block_starts(y.mul_scalar(self.factor as f64))
    }
}

/// A dense A's decomposition, from the eigenvectors of AᵀA.
pub struct DenseSvd {
    /// V, row-major d × d (column j the j-th right singular vector).
    v: Vec<f64>,
    /// sⱼ (0 past A's rank).
    s: Vec<f64>,
    /// A, row-major d_y × d.
    a: Vec<Vec<f64>>,
    d: usize,
}

impl DenseSvd {
    pub fn new(a: &[Vec<f64>]) -> Self {
        let (dy, d) = (a.len(), a[0].len());
        let mut ata = vec![0.0; d * d];
        for row in a {
            for i in 0..d {
                for j in 0..d {
                    ata[i * d + j] += row[i] * row[j];
                }
            }
        }
        let (lambda, v) = tweedie_core::linalg::sym_eigen(&ata, d);
        let top = lambda.iter().fold(0.0f64, |m, l| m.max(*l));
        // Past the rank (at most d_y), the eigenvalues are rounding: exactly 0.
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&i, &j| lambda[j].total_cmp(&lambda[i]));
        let s: Vec<f64> = order
            .iter()
            .enumerate()
            .map(|(r, &i)| {
                if r < dy && lambda[i] > 1e-12 * top {
                    lambda[i].sqrt()
                } else {
                    0.0
                }
            })
            .collect();
        let v = (0..d * d).map(|k| v[(k / d) * d + order[k % d]]).collect();
        Self {
            v,
            s,
            a: a.to_vec(),
            d,
        }
    }

    /// The largest singular value, ‖A‖₂.
    pub fn largest(&self) -> f64 {
        self.s.iter().fold(0.0, |m, v| m.max(*v))
    }

    /// `rows × d` host values times V (transposed when `t`).
    fn times_v(&self, x: Tensor<4>, transpose: bool) -> Tensor<4> {
        let d = self.d;
        let device = x.device();
        let b = x.dims()[0];
        let xs = tweedie_core::host_values(x);
        let mut out = vec![0.0f32; b * d];
        for r in 0..b {
            for j in 0..d {
                let mut acc = 0.0;
                for i in 0..d {
                    // x̄ⱼ = Σᵢ V[i][j] xᵢ (Vᵀx); xᵢ = Σⱼ V[i][j] x̄ⱼ (V x̄).
                    let vij = if transpose {
                        self.v[i * d + j]
                    } else {
                        self.v[j * d + i]
                    };
                    acc += vij * xs[r * d + i] as f64;
                }
                out[r * d + j] = acc as f32;
            }
        }
        Tensor::from_data(TensorData::new(out, [b, d, 1, 1]), &device)
    }
}

impl Spectral for DenseSvd {
    fn image_to_spectral(&self, x: Tensor<4>) -> Tensor<4> {
        self.times_v(x, true)
    }
    fn spectral_to_image(&self, v: Tensor<4>) -> Tensor<4> {
        self.times_v(v, false)
    }
    fn singular_values(&self, _shape: [usize; 3], device: &Device) -> Tensor<4> {
        let s: Vec<f32> = self.s.iter().map(|v| *v as f32).collect();
        Tensor::from_data(TensorData::new(s, [1, self.d, 1, 1]), device)
    }
    /// ȳⱼ = uⱼᵀy / sⱼ = vⱼᵀAᵀy / sⱼ².
    fn observed(&self, y: Tensor<4>, _shape: [usize; 3]) -> Tensor<4> {
        let (d, dy) = (self.d, self.a.len());
        let device = y.device();
        let b = y.dims()[0];
        let ys = tweedie_core::host_values(y);
        let mut out = vec![0.0f32; b * d];
        for r in 0..b {
            let aty: Vec<f64> = (0..d)
                .map(|i| (0..dy).map(|k| self.a[k][i] * ys[r * dy + k] as f64).sum())
                .collect();
            for j in 0..d {
                if self.s[j] > 0.0 {
                    let vty: f64 = (0..d).map(|i| self.v[i * d + j] * aty[i]).sum();
                    out[r * d + j] = (vty / (self.s[j] * self.s[j])) as f32;
                }
            }
        }
        Tensor::from_data(TensorData::new(out, [b, d, 1, 1]), &device)
    }
}

impl Matrix {
    /// The decomposition by [`DenseSvd`].
    pub fn svd(&self) -> DenseSvd {
        DenseSvd::new(&self.a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::GaussianBlur;
    use tweedie_core::rng::Rng;

    /// V is orthogonal (x̄ keeps ‖x‖ and maps back), and A's action in the spectral basis is Σ:
    /// ȳ(A x) = x̄ where s > 0 and 0 where s = 0.
    fn check(op: &dyn ForwardOperator, shape: [usize; 4]) {
        let dev = Device::flex();
        let sp = of(op).unwrap_or_else(|| panic!("{} has a decomposition", op.name()));
        let [_, c, h, w] = shape;
        let x = Rng::new(3).normal_tensor(shape, &dev);
        let v = sp.image_to_spectral(x.clone());
        let close = |a: Tensor<4>, e: Tensor<4>, what: &str| {
            let d = tweedie_core::host_values((a - e).abs().max());
            assert!(d[0] < 1e-4, "{}: {what} off by {}", op.name(), d[0]);
        };
        close(sp.spectral_to_image(v.clone()), x.clone(), "V Vᵀ x = x");
        let norm = |t: Tensor<4>| tweedie_core::host_values(t.square().sum())[0];
        assert!((norm(v.clone()) - norm(x.clone())).abs() < 1e-3 * norm(x.clone()));
        let s = sp.singular_values([c, h, w], &dev);
        let on = s.clone().greater_elem(0.0).float();
        let y = op.apply(x.clone());
        close(
            sp.observed(y, [c, h, w]),
            v.clone() * on.clone(),
            "ȳ(Ax) = x̄ on the row space",
        );
        // A V = U Σ: the null-space part of x̄ maps to 0, and the row-space part keeps its
        // norm scaled coordinate by coordinate by sᵢ (U orthogonal).
        let off = on.clone().neg() + 1.0;
        let null = op.apply(sp.spectral_to_image(v.clone() * off));
        assert!(
            norm(null) < 1e-8 * norm(x.clone()),
            "{}: null space",
            op.name()
        );
        let row = op.apply(sp.spectral_to_image(v.clone() * on));
        let want = norm(v * s);
        assert!(
            (norm(row) - want).abs() < 1e-4 * want,
            "{}: ‖A V x̄‖ ≠ ‖Σ x̄‖",
            op.name()
        );
    }

    #[test]
    fn closed_form_decompositions_diagonalise_their_operators() {
        check(&Mask::hide_box(6, 6, 1, 1, 3, 2), [2, 3, 6, 6]);
        check(&Identity, [2, 1, 4, 4]);
        check(&Luminance, [2, 3, 4, 5]);
        for k in [2, 4] {
            check(&AvgPool { factor: k }, [2, 3, 8, 8]);
        }
        let mut r = Rng::new(9);
        let a: Vec<Vec<f64>> = (0..3)
            .map(|_| r.normals(7).into_iter().map(f64::from).collect())
            .collect();
        check(&Matrix { a }, [4, 7, 1, 1]);
        assert!(
            of(&GaussianBlur {
                sigma: 1.0,
                size: 5
            })
            .is_none()
        );
    }
}
