//! A duration model: `ln D ~ N(mu, sigma²)`, fitted to what polls tell about each job.
//!
//! A poll at a time `t` after the submit says whether the job is done by then. So each job
//! gives an interval: done somewhere after its last "pending" answer and no later than its
//! "done" answer; a job still running gives "longer than its last pending answer". The model is
//! the maximum-likelihood lognormal for such intervals (expectation–maximisation over a window
//! of recent jobs), pulled toward a prior by a little pseudo-evidence. So:
//! - polls close together (a budget with slack) bracket a job's end narrowly and teach fast: a
//!   few jobs are enough to unlearn a prior seven times too long;
//! - jobs still running at the planned poll time push the model up at once (a prior three times
//!   too short): every pending answer counts, before any job of the class has ended;
//! - at a saturated budget, polls at the 80 % point bracket ends widely, but what the fit must
//!   match is then just the share done at each poll time: polls settle where that share is
//!   done, whatever the true shape of the distribution;
//! - a window of recent jobs follows a drifting service (queue times follow Segmind's load).

/// A lognormal distribution of milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogNormal {
    pub mu: f64,
    pub sigma: f64,
}

/// Bounds of `sigma`: a hundredth is as exact as timing gets; above 1.5 a quantile means
/// nothing.
const SIGMA_MIN: f64 = 0.01;
const SIGMA_MAX: f64 = 1.5;

/// What one job told about its duration (ms after the submit): more than `lo`, at most `hi`
/// (`None`: still running).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bracket {
    pub lo: f64,
    pub hi: Option<f64>,
}

impl LogNormal {
    /// A prior with median `median_ms` and log-spread `sigma`.
    pub fn new(median_ms: f64, sigma: f64) -> LogNormal {
        LogNormal {
            mu: median_ms.max(1.0).ln(),
            sigma: sigma.clamp(SIGMA_MIN, SIGMA_MAX),
        }
    }

    pub fn median(&self) -> f64 {
        self.mu.exp()
    }

    pub fn mean(&self) -> f64 {
        (self.mu + self.sigma * self.sigma / 2.0).exp()
    }

    fn z(&self, t_ms: f64) -> f64 {
        ((t_ms.max(1.0).ln() - self.mu) / self.sigma).clamp(-30.0, 30.0)
    }

    /// `P(D ≤ t)`.
    pub fn cdf(&self, t_ms: f64) -> f64 {
        normal_cdf(self.z(t_ms))
    }

    /// The time by which a share `q` of jobs is done.
    pub fn quantile(&self, q: f64) -> f64 {
        (self.mu + self.sigma * normal_quantile(q)).exp()
    }

    /// The time by which a share `q` of the jobs still running at `after` is done.
    pub fn quantile_after(&self, after_ms: f64, q: f64) -> f64 {
        let f = self.cdf(after_ms);
        let target = f + q * (1.0 - f);
        if target >= 1.0 - 1e-9 {
            // Far in the tail: the model says nothing useful; a little later.
            return after_ms * (1.0 + self.sigma);
        }
        self.quantile(target).max(after_ms)
    }

    /// `P(D ≤ t | D > after)`.
    pub fn done_by(&self, t_ms: f64, after_ms: f64) -> f64 {
        let (ft, fa) = (self.cdf(t_ms), self.cdf(after_ms));
        if fa >= 1.0 - 1e-12 {
            return 1.0;
        }
        ((ft - fa) / (1.0 - fa)).clamp(0.0, 1.0)
    }

    /// The maximum-likelihood fit to `brackets`, pulled toward `prior` as if it were `weight`
    /// exactly observed jobs, starting from `self`.
    pub fn fit(&self, brackets: &[Bracket], prior: &LogNormal, weight: f64) -> LogNormal {
        let mut m = *self;
        if brackets.is_empty() {
            return *prior;
        }
        let n = brackets.len() as f64 + weight;
        for _ in 0..30 {
            // E-step: the mean and variance of ln D within each job's bracket.
            let moments: Vec<(f64, f64)> = brackets.iter().map(|b| m.moments(b)).collect();
            // M-step.
            let mu = (moments.iter().map(|(e, _)| e).sum::<f64>() + weight * prior.mu) / n;
            // The prior lends its spread, not its distance from the data: a prior far off must
            // not widen the fit it is leaving.
            let var =
                (moments.iter().map(|(e, v)| v + (e - mu).powi(2)).sum::<f64>() + weight * prior.sigma.powi(2)) / n;
            let next = LogNormal {
                mu,
                sigma: var.max(0.0).sqrt().clamp(SIGMA_MIN, SIGMA_MAX),
            };
            let moved = (next.mu - m.mu).abs() + (next.sigma - m.sigma).abs();
            m = next;
            if moved < 1e-5 {
                break;
            }
        }
        m
    }

    /// The mean and variance of `ln D` given that it lies in the bracket.
    fn moments(&self, b: &Bracket) -> (f64, f64) {
        let (mu, s) = (self.mu, self.sigma);
        let lo = (b.lo > 0.0).then(|| b.lo.ln());
        let hi = b.hi.map(|h| h.max(b.lo + 1.0).max(1.0).ln());
        // A bracket much narrower than the spread: its middle, as good as exact.
        if let (Some(l), Some(h)) = (lo, hi) {
            if h - l < 0.05 * s {
                return ((l + h) / 2.0, (h - l).powi(2) / 12.0);
            }
        }
        let a = lo.map_or(-30.0, |l| ((l - mu) / s).clamp(-30.0, 30.0));
        let c = hi.map_or(30.0, |h| ((h - mu) / s).clamp(-30.0, 30.0));
        let mass = normal_cdf(c) - normal_cdf(a);
        let (pa, pc) = (normal_pdf(a), normal_pdf(c));
        if mass < 1e-12 {
            // The model puts (almost) nothing there: the nearer edge.
            let edge = if c <= 0.0 { c } else { a };
            return (mu + s * edge, 0.0);
        }
        let shift = (pa - pc) / mass;
        let spread = 1.0 + (a * pa - c * pc) / mass - shift * shift;
        (mu + s * shift, (s * s * spread).max(0.0))
    }
}

pub fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// The complementary error function with relative error below 1.2e-7 everywhere (Numerical
/// Recipes' `erfcc`, a Chebyshev fit): accurate in the far tail, where the ratio `φ/Φ` needs it.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.024_25 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.024_25 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn the_normal_functions_are_right() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-5);
        for p in [0.001, 0.1, 0.3, 0.5, 0.8, 0.99] {
            assert!((normal_cdf(normal_quantile(p)) - p).abs() < 1e-6, "{p}");
        }
        assert!(normal_cdf(-30.0) > 0.0, "the tail stays positive");
    }

    fn jobs(mean: f64, spread: f64, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| mean * rng.gen_range(1.0 - spread..=1.0 + spread))
            .collect()
    }

    /// Jobs one after another: polled every `gap` ms (slack) or at the model's quantile `q`
    /// then at conditional quantiles (saturated), the model refitted after each job.
    fn learn(
        m: &mut LogNormal,
        window: &mut Vec<Bracket>,
        prior: &LogNormal,
        durations: &[f64],
        gap: Option<f64>,
        q: f64,
    ) -> (f64, f64) {
        let (mut polls, mut delay) = (0.0, 0.0);
        for &d in durations {
            let mut t = gap.unwrap_or_else(|| m.quantile(q));
            let mut lo = 0.0;
            loop {
                polls += 1.0;
                if t >= d {
                    delay += t - d;
                    break;
                }
                lo = t;
                t = match gap {
                    Some(g) => t + g,
                    None => m.quantile_after(t, q).max(t + 1.0),
                };
            }
            window.push(Bracket { lo, hi: Some(t) });
            if window.len() > 64 {
                window.remove(0);
            }
            *m = m.fit(window, prior, 0.25);
        }
        (polls / durations.len() as f64, delay / durations.len() as f64)
    }

    #[test]
    fn polls_at_a_quantile_settle_where_that_share_is_done() {
        let prior = LogNormal::new(54_000.0, 0.3);
        let mut m = prior;
        let (polls, _) = learn(&mut m, &mut vec![], &prior, &jobs(54_000.0, 0.1, 300, 1), None, 0.8);
        // Uniform 54 s ± 10 %: its 80 % point is 56.8 s.
        let t = m.quantile(0.8);
        assert!((t - 56_800.0).abs() < 1_500.0, "{t}");
        assert!(polls < 1.35, "{polls}");
    }

    #[test]
    fn a_prior_seven_times_too_long_is_unlearnt_within_twenty_videos() {
        // Polls at the prior's 80 % point alone cannot tell how much earlier jobs end ("done by
        // 70 s" is what the prior expects): the first videos' slack polls tell.
        let prior = LogNormal::new(54_000.0, 0.3);
        let mut m = prior;
        let mut window = vec![];
        learn(
            &mut m,
            &mut window,
            &prior,
            &jobs(8_000.0, 0.1, 5, 2),
            Some(1000.0),
            0.8,
        );
        learn(&mut m, &mut window, &prior, &jobs(8_000.0, 0.1, 15, 4), None, 0.8);
        let t = m.quantile(0.8);
        assert!((7_800.0..9_500.0).contains(&t), "{t}");
    }

    #[test]
    fn a_prior_three_times_too_short_is_unlearnt_within_twenty_videos() {
        let prior = LogNormal::new(54_000.0, 0.3);
        let mut m = prior;
        learn(&mut m, &mut vec![], &prior, &jobs(150_000.0, 0.1, 20, 3), None, 0.8);
        let t = m.quantile(0.8);
        assert!((140_000.0..175_000.0).contains(&t), "{t}");
    }

    #[test]
    fn jobs_still_running_push_the_model_up_before_any_ends() {
        let prior = LogNormal::new(54_000.0, 0.3);
        let running: Vec<Bracket> = (0..10).map(|_| Bracket { lo: 70_000.0, hi: None }).collect();
        let m = prior.fit(&running, &prior, 1.0);
        assert!(m.median() > 70_000.0, "{}", m.median());
    }

    #[test]
    fn narrow_brackets_are_as_good_as_exact() {
        let prior = LogNormal::new(54_000.0, 0.3);
        let b: Vec<Bracket> = jobs(8_000.0, 0.1, 10, 5)
            .into_iter()
            .map(|d| Bracket {
                lo: d - 20.0,
                hi: Some(d + 20.0),
            })
            .collect();
        let m = prior.fit(&b, &prior, 1.0);
        assert!((m.median() - 8_000.0).abs() < 1_500.0, "{}", m.median());
    }
}
