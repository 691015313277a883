//! Training pairs (x, y) drawn on the fly.

use tweedie_core::gmm::{GaussianMixture, LinearGaussian};
use tweedie_core::rng::Rng;

/// Draws n pairs x ~ p(x), y ~ p(y | x), row-major: (x `[n, dim]`, y `[n, cond_dim]`).
pub trait PairSource {
    fn dim(&self) -> usize;
    fn cond_dim(&self) -> usize;
    fn draw(&self, n: usize, rng: &mut Rng) -> (Vec<f32>, Vec<f32>);
}

/// A Gaussian-mixture prior observed as y = A x + σ n.
pub struct VectorPairs<'a> {
    pub prior: &'a GaussianMixture,
    pub obs: &'a LinearGaussian,
}

/// One y ~ p(y) per row (the x that made it thrown away).
pub fn observations(pairs: &dyn PairSource, n: usize, rng: &mut Rng) -> Vec<Vec<f64>> {
    let (_, y) = pairs.draw(n, rng);
    y.chunks(pairs.cond_dim())
        .map(|r| r.iter().map(|v| f64::from(*v)).collect())
        .collect()
}

impl PairSource for VectorPairs<'_> {
    fn dim(&self) -> usize {
        self.prior.dim()
    }

    fn cond_dim(&self) -> usize {
        self.obs.dy()
    }

    fn draw(&self, n: usize, rng: &mut Rng) -> (Vec<f32>, Vec<f32>) {
        let (x, _) = self.prior.sample(n, rng);
        let d = self.prior.dim();
        let mut y = Vec::with_capacity(n * self.obs.dy());
        for xi in x.chunks(d) {
            let e = rng.normals(self.obs.dy());
            y.extend(
                self.obs
                    .apply(xi)
                    .iter()
                    .zip(e)
                    .map(|(a, e)| (a + self.obs.sigma * f64::from(e)) as f32),
            );
        }
        (x.iter().map(|v| *v as f32).collect(), y)
    }
}
