//! Helpers shared by the unit tests.

use rand::Rng;

/// A standard normal draw by Box–Muller: enough for planted-data tests.
pub fn normal(rng: &mut impl Rng) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}
