//! The statistics behind thresholds that keep their promise on new data: binomial intervals
//! (Wilson, Clopper-Pearson), a paired interval for the difference of two accuracies measured
//! on the same inputs (Tango's score interval), Learn then Test by fixed-sequence testing with
//! exact binomial p-values, how many calibration inputs a certificate would need, the estimate
//! of the live disagreement rate from random audits (weighted by 1/R), and the adaptive
//! threshold under drift (adaptive conformal inference). Pure and deterministic: plain numbers
//! in, plain numbers out; `calibrate`, `eval`, `report` and `run` print what it returns.

// ---------------------------------------------------------------------------------------------
// Special functions
// ---------------------------------------------------------------------------------------------

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine coefficients: about 1e-15 relative).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).abs().ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let a = C[1..].iter().enumerate().fold(C[0], |a, (i, c)| a + c / (x + i as f64 + 1.0));
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The modified Lentz continued fraction of the incomplete beta function (converges fast for
/// x < (a + 1) / (a + b + 2); in O(sqrt(max(a, b))) terms).
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    d = 1.0 / if d.abs() < TINY { TINY } else { d };
    let mut h = d;
    for m in 1..1_000_000u32 {
        let m = m as f64;
        let m2 = 2.0 * m;
        for aa in [m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))] {
            d = 1.0 + aa * d;
            d = 1.0 / if d.abs() < TINY { TINY } else { d };
            c = 1.0 + aa / c;
            c = if c.abs() < TINY { TINY } else { c };
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function I_x(a, b), given x and y = 1 - x (passed apart so
/// that a tail near 1 keeps its precision).
fn beta_inc_xy(a: f64, b: f64, x: f64, y: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if y <= 0.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * y.ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        (ln_front.exp() * beta_fraction(a, b, x) / a).clamp(0.0, 1.0)
    } else {
        (1.0 - ln_front.exp() * beta_fraction(b, a, y) / b).clamp(0.0, 1.0)
    }
}

/// The regularized incomplete beta function I_x(a, b) for a, b > 0 and x in [0, 1].
pub fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    beta_inc_xy(a, b, x, 1.0 - x)
}

/// P(Bin(n, p) <= k), as I_{1-p}(n - k, k + 1): accurate in the lower tail (relative) and
/// near 1 (absolute) for n up to millions; exact at the edges (k >= n, p = 0, p = 1).
pub fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    if k >= n || p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0;
    }
    beta_inc_xy((n - k) as f64, k as f64 + 1.0, 1.0 - p, p)
}

/// The regularized upper incomplete gamma function Q(a, x) (series below a + 1, Lentz's
/// continued fraction above).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let ln_front = -x + a * x.ln() - ln_gamma(a);
    if x < a + 1.0 {
        let (mut ap, mut del, mut sum) = (a, 1.0 / a, 1.0 / a);
        for _ in 0..10_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-17 {
                break;
            }
        }
        1.0 - sum * ln_front.exp()
    } else {
        const TINY: f64 = 1e-300;
        let mut b = x + 1.0 - a;
        let (mut c, mut d) = (1.0 / TINY, 1.0 / b);
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            d = 1.0 / if d.abs() < TINY { TINY } else { d };
            c = b + an / c;
            c = if c.abs() < TINY { TINY } else { c };
            h *= d * c;
            if (d * c - 1.0).abs() < 1e-16 {
                break;
            }
        }
        ln_front.exp() * h
    }
}

/// The standard normal CDF Φ(x) (through erfc(y) = Q(1/2, y²): full precision in the lower tail).
pub fn normal_cdf(x: f64) -> f64 {
    let tail = 0.5 * gamma_q(0.5, x * x / 2.0);
    if x < 0.0 {
        tail
    } else {
        1.0 - tail
    }
}

/// Φ⁻¹(p) for p in (0, 1), by bisection on `normal_cdf` (to the last bit; called a few times
/// per figure, never per input).
pub fn normal_quantile(p: f64) -> f64 {
    if p > 0.5 {
        return -normal_quantile(1.0 - p);
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    bisect(-40.0, 0.0, |x| normal_cdf(x) >= p)
}

/// The point where `above` turns from false (at `lo`) to true (at `hi`), to the last bit.
fn bisect(mut lo: f64, mut hi: f64, above: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if above(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    0.5 * (lo + hi)
}

/// z such that a two-sided interval at `confidence` is ±z standard errors (1.959964 at 0.95).
pub fn z_two_sided(confidence: f64) -> f64 {
    normal_quantile(0.5 + confidence / 2.0)
}

// ---------------------------------------------------------------------------------------------
// Intervals for rates and for a paired difference
// ---------------------------------------------------------------------------------------------

/// A two-sided confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
}

/// Wilson's score interval for k successes of n at `confidence` (e.g. 0.95): good coverage on
/// average and never outside [0, 1]; n = 0 gives [0, 1].
pub fn wilson(k: u64, n: u64, confidence: f64) -> Interval {
    if n == 0 {
        return Interval { lo: 0.0, hi: 1.0 };
    }
    let (k, n, z) = (k.min(n) as f64, n as f64, z_two_sided(confidence));
    let z2 = z * z;
    let centre = (k + z2 / 2.0) / (n + z2);
    let half = z / (n + z2) * (k * (n - k) / n + z2 / 4.0).sqrt();
    Interval {
        lo: if k == 0.0 { 0.0 } else { (centre - half).max(0.0) },
        hi: if k == n { 1.0 } else { (centre + half).min(1.0) },
    }
}

/// The Clopper-Pearson ("exact") interval for k successes of n at `confidence`: each bound
/// inverts a binomial tail at (1 - confidence) / 2, so coverage is at least `confidence` for
/// every true rate (conservative). 0 of n gives [0, 1 - (α/2)^(1/n)]; n of n [(α/2)^(1/n), 1].
pub fn clopper_pearson(k: u64, n: u64, confidence: f64) -> Interval {
    if n == 0 {
        return Interval { lo: 0.0, hi: 1.0 };
    }
    let k = k.min(n);
    let tail = (1.0 - confidence) / 2.0;
    // lo: P(X >= k | p) = I_p(k, n - k + 1) rises with p to `tail`.
    let lo = if k == 0 { 0.0 } else { bisect(0.0, 1.0, |p| beta_inc(k as f64, (n - k + 1) as f64, p) >= tail) };
    // hi: P(X <= k | p) falls with p to `tail`.
    let hi = if k == n { 1.0 } else { bisect(0.0, 1.0, |p| binomial_cdf(k, n, p) <= tail) };
    Interval { lo, hi }
}

/// Tango's score statistic for the paired difference Δ = (P(gain) - P(loss)) at `d`, with `b`
/// gains and `c` losses of `n`: (b - c - nΔ) / sqrt(n (2 p̃ + Δ(1 - Δ))), p̃ the maximum
/// likelihood P(loss) given Δ. Decreasing in Δ.
fn tango_score(b: f64, c: f64, n: f64, d: f64) -> f64 {
    if d < 0.0 {
        return -tango_score(c, b, n, -d);
    }
    let num = b - c - n * d;
    // 2n p² + (-(b + c) + (2n - b + c) Δ) p - c Δ (1 - Δ) = 0, its root >= 0.
    let (qa, qb, qc) = (2.0 * n, -(b + c) + (2.0 * n - b + c) * d, -c * d * (1.0 - d));
    let p = (-qb + (qb * qb - 4.0 * qa * qc).max(0.0).sqrt()) / (2.0 * qa);
    let var = n * (2.0 * p + d * (1.0 - d));
    if var <= 0.0 || num == 0.0 {
        return if num == 0.0 { 0.0 } else { num.signum() * f64::INFINITY };
    }
    num / var.sqrt()
}

/// The interval at `confidence` of the difference of two accuracies measured on the same n
/// inputs (the cascade minus the last stage alone), from the discordant counts: `gains` inputs
/// the cascade got right and the last stage wrong, `losses` the other way round. The estimate
/// is (gains - losses) / n.
///
/// Tango's asymptotic score interval (Tango 1998, Stat. Med. 17:891): every Δ whose score
/// statistic, with the nuisance rate at its maximum likelihood under Δ, is within ±z. Chosen
/// because it only depends on the discordant counts and n (which is what a paired design
/// informs), has coverage close to nominal down to small counts where the Wald interval
/// collapses (0 discordant pairs still gives a nonzero width), stays in [-1, 1], and agrees
/// with McNemar's test (it excludes 0 exactly when McNemar's score test rejects); Fagerland,
/// Lydersen and Laake (2013, Stat. Med. 32:1743) recommend it among the paired intervals.
pub fn paired_difference(gains: u64, losses: u64, n: u64, confidence: f64) -> Interval {
    if n == 0 {
        return Interval { lo: -1.0, hi: 1.0 };
    }
    let (b, c, n) = (gains as f64, losses as f64, n as f64);
    let z = z_two_sided(confidence);
    let est = (b - c) / n;
    let lo = if est <= -1.0 { -1.0 } else { bisect(-1.0, est, |d| tango_score(b, c, n, d) <= z) };
    let hi = if est >= 1.0 { 1.0 } else { bisect(est, 1.0, |d| tango_score(b, c, n, d) < -z) };
    Interval { lo, hi }
}

// ---------------------------------------------------------------------------------------------
// Learn then Test
// ---------------------------------------------------------------------------------------------

/// The exact binomial p-value of H0 "risk > eps" after `losses` of `n`: P(Bin(n, eps) <= losses).
/// Valid (super-uniform) under every risk >= eps.
pub fn binomial_p_value(losses: u64, n: u64, eps: f64) -> f64 {
    binomial_cdf(losses, n, eps)
}

/// One candidate threshold's calibration counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tally {
    /// Calibration inputs.
    pub n: u64,
    /// Inputs with a loss at this threshold (see [`learn_then_test`]).
    pub losses: u64,
}

/// What Learn then Test certified.
#[derive(Clone, Debug, PartialEq)]
pub struct Certificate {
    /// The last candidate whose null was rejected (the cheapest certified threshold), if any.
    pub chosen: Option<usize>,
    /// The p-value of every candidate, in the order given (those after the first one not
    /// rejected were not tested; their p-values are for the record only).
    pub p_values: Vec<f64>,
}

/// Learn then Test (Angelopoulos, Bates, Candès, Jordan, Lei 2021, arXiv 2110.01052) with
/// fixed-sequence testing. `candidates` run from the most forwarding (safest) threshold to the
/// least; for each, H0_j: risk_j > eps is tested with p_j = P(Bin(n_j, eps) <= losses_j), in
/// order, while p_j <= delta. The last rejected one is returned. Fixed-sequence testing
/// controls the family-wise error at delta, so with probability at least 1 - delta over the
/// calibration draw (inputs exchangeable with those to come) the chosen threshold's risk is at
/// most eps; it needs no monotonicity of the risk in the threshold.
///
/// The loss to count. For labels, "the cascade's accuracy is at most eps below the last
/// stage's": drop = P(cascade wrong) - P(last wrong) = P(cascade wrong, last right) -
/// P(cascade right, last wrong), whose per-input term is -1, 0 or 1. Count as a loss an input
/// the cascade gets wrong and the last stage right (only possible where the cascade exited
/// early); drop <= P(loss), so certifying P(loss) <= eps certifies the drop, conservatively
/// (the inputs the early exit gets right and the last stage wrong are not credited; an exact
/// binomial test of a 0/1 loss is worth that price over a bound for a -1..1 mean). Without
/// labels, count an input that exits early with an answer other than the last stage's: the
/// risk is then exactly the disagreement with the last stage ("agrees with the host model on
/// at least 1 - eps of inputs").
///
/// A threshold that forwards everything has risk 0 by construction and needs no test; with
/// n < ln(delta) / ln(1 - eps) even its 0 losses cannot be rejected, so callers should start
/// the sequence at the first threshold that exits anything.
pub fn learn_then_test(candidates: &[Tally], eps: f64, delta: f64) -> Certificate {
    let p_values: Vec<f64> = candidates.iter().map(|t| binomial_p_value(t.losses, t.n, eps)).collect();
    let rejected = p_values.iter().take_while(|&&p| p <= delta).count();
    Certificate { chosen: rejected.checked_sub(1), p_values }
}

/// About how many calibration inputs would certify a threshold whose observed loss rate is
/// `p_hat` at (eps, delta): the smallest n at which the binomial test with round(p_hat n)
/// losses rejects, found by doubling then bisection (the rounding makes the test not quite
/// monotone in n, so the figure is the boundary to within a few inputs). None when p_hat >=
/// eps (no number of inputs certifies it) or beyond `max_n`. With p_hat = 0 it is
/// ceil(ln delta / ln(1 - eps)).
pub fn inputs_needed(p_hat: f64, eps: f64, delta: f64, max_n: u64) -> Option<u64> {
    if !(p_hat >= 0.0 && p_hat < eps && eps < 1.0 && delta > 0.0) {
        return None;
    }
    let rejects = |n: u64| binomial_p_value((p_hat * n as f64).round() as u64, n, eps) <= delta;
    let mut hi = 1u64;
    while !rejects(hi) {
        if hi >= max_n {
            return None;
        }
        hi = (hi * 2).min(max_n);
    }
    let mut lo = hi / 2; // does not reject (or 0)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if rejects(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

// ---------------------------------------------------------------------------------------------
// The live audit
// ---------------------------------------------------------------------------------------------

/// How an audit estimate was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditMethod {
    /// One audit rate for every input: the audited inputs are a uniform random subsample of
    /// those the device answered, the 1/R weights cancel, and the estimate is the binomial
    /// proportion on the audited ones with Wilson's interval.
    Binomial,
    /// Audit rates that vary: Horvitz-Thompson with a normal approximation (see [`AuditTally`]).
    HorvitzThompson,
}

/// Whether the live disagreement rate exceeds the calibrated E.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The whole interval is at or below E.
    Within,
    /// The interval straddles E: not enough audits to say.
    Unclear,
    /// The interval's lower bound is above E: at 95% confidence a one-sided test at 2.5%
    /// rejects "rate <= E". Warn.
    Exceeds,
}

/// The estimated disagreement rate of the inputs the device answered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AuditEstimate {
    /// Device-answered inputs that could be audited (rate > 0).
    pub answered: u64,
    pub audited: u64,
    pub disagreed: u64,
    pub rate: f64,
    pub interval: Interval,
    pub method: AuditMethod,
}

impl AuditEstimate {
    /// Within, Unclear or Exceeds against `e`, from the interval (see [`Verdict`]).
    pub fn verdict(&self, e: f64) -> Verdict {
        if self.interval.lo > e {
            Verdict::Exceeds
        } else if self.interval.hi <= e {
            Verdict::Within
        } else {
            Verdict::Unclear
        }
    }

    /// The same figure over all inputs: forwarded inputs take the host's answer and so never
    /// disagree, so the rate over all `total` inputs is this one times answered / total
    /// (the fraction answered on the device, known exactly). That is the scale of E in
    /// calibration; the rate among device-answered inputs is the stricter one.
    pub fn over_all_inputs(&self, total: u64) -> AuditEstimate {
        let f = self.answered as f64 / total.max(self.answered).max(1) as f64;
        AuditEstimate {
            rate: self.rate * f,
            interval: Interval { lo: self.interval.lo * f, hi: self.interval.hi * f },
            ..*self
        }
    }
}

/// The audit of a run, one input at a time: each input the device answered, with the
/// probability R it had of being audited (sent to the host as well) and, when it was, whether
/// the host disagreed.
///
/// The estimand is the disagreement rate of device-answered inputs. With one R throughout,
/// the audited inputs are a uniform subsample and the estimate is k/m (k disagreements of m
/// audits; the Horvitz-Thompson weights 1/R cancel in its normalised (Hájek) form) with
/// Wilson's interval. With varying R (runs with different `--audit-rate` in one log) it is the
/// Horvitz-Thompson estimate (1/N) Σ_audited D_i / R_i over the N answered inputs: unbiased
/// whatever the rates. Its interval is a normal approximation: the union of (a) the score
/// interval under a common rate p, {p : (p̂ - p)² <= z² (p Σ 1/R_i - N p²) / N²}, which keeps
/// a width when few disagreements were seen, and (b) the Wald interval with the variance
/// estimate (1/N²) Σ_audited D_i / R_i², which needs no common rate (it drops -Σ p_i², so it
/// overstates the variance slightly). Inputs with R = 0 could not be audited and are left out.
/// An audit the host failed to answer should be recorded as not audited (valid if failures do
/// not depend on whether it would have disagreed).
#[derive(Clone, Debug, Default)]
pub struct AuditTally {
    answered: u64,
    inv_rate: f64,
    audited: u64,
    disagreed: u64,
    weighted: f64,
    weighted_sq: f64,
    rate: Option<f64>,
    rates_vary: bool,
}

impl AuditTally {
    /// One device-answered input: its audit rate (in (0, 1]; 0 or less: not auditable, left
    /// out) and, if it was audited, whether the host disagreed.
    pub fn record(&mut self, rate: f64, audit: Option<bool>) {
        if rate.is_nan() || rate <= 0.0 {
            return;
        }
        let rate = rate.min(1.0);
        match self.rate {
            None => self.rate = Some(rate),
            Some(r) if r != rate => self.rates_vary = true,
            _ => {}
        }
        self.answered += 1;
        self.inv_rate += 1.0 / rate;
        if let Some(disagreed) = audit {
            self.audited += 1;
            if disagreed {
                self.disagreed += 1;
                self.weighted += 1.0 / rate;
                self.weighted_sq += 1.0 / (rate * rate);
            }
        }
    }

    /// The estimate with its interval at `confidence`; None before any audit.
    pub fn estimate(&self, confidence: f64) -> Option<AuditEstimate> {
        if self.audited == 0 {
            return None;
        }
        let (answered, audited, disagreed) = (self.answered, self.audited, self.disagreed);
        if !self.rates_vary {
            return Some(AuditEstimate {
                answered,
                audited,
                disagreed,
                rate: disagreed as f64 / audited as f64,
                interval: wilson(disagreed, audited, confidence),
                method: AuditMethod::Binomial,
            });
        }
        let n = answered as f64;
        let z = z_two_sided(confidence);
        let est = self.weighted / n;
        // (a) (est - p)² <= s (p Q - p² N), s = z² / N²: a quadratic in p.
        let s = z * z / (n * n);
        let (qa, qb) = (1.0 + s * n, 2.0 * est + s * self.inv_rate);
        let root = (qb * qb - 4.0 * qa * est * est).max(0.0).sqrt();
        let (slo, shi) = ((qb - root) / (2.0 * qa), (qb + root) / (2.0 * qa));
        // (b) Wald with the variance that assumes no common rate.
        let half = z * self.weighted_sq.sqrt() / n;
        Some(AuditEstimate {
            answered,
            audited,
            disagreed,
            rate: est,
            interval: Interval { lo: slo.min(est - half).clamp(0.0, 1.0), hi: shi.max(est + half).clamp(0.0, 1.0) },
            method: AuditMethod::HorvitzThompson,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The adaptive threshold
// ---------------------------------------------------------------------------------------------

/// Which way the threshold moves to forward more inputs: up for max-softmax and margin (an
/// input exits at or above the threshold), down for entropy (at or below).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// A move of the threshold in use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Change {
    /// How many audit outcomes had been observed when it moved (this one included).
    pub observation: u64,
    pub from: f64,
    pub to: f64,
}

/// The threshold moved online from audit outcomes: adaptive conformal inference (Gibbs and
/// Candès 2021, arXiv 2106.00170), whose update α_{t+1} = α_t + γ(α - err_t) is applied to the
/// threshold itself: θ_{t+1} = clamp(θ_t ± γ (err_t - E), lo, hi), the sign the one that
/// forwards more after a disagreement. err_t is 1 when the t-th audited device answer
/// disagreed with the host.
///
/// Why this method: it needs no model of the drift and no exchangeability, one number of state
/// and one addition per audit, and its guarantee holds for any sequence of inputs, drift or
/// not (an anytime-valid test, the other candidate, would only say when to stop trusting the
/// threshold, not where to move it). The guarantee, deterministic: over T audits,
/// mean(err) <= E + (room + Σ c_t) / (γ T), where room is the distance from the start to the
/// safe bound and c_t the amount the clamp at the safe bound cut off at step t ([`slack`]
/// returns the right-hand side's excess). So as long as the safe bound is not hit, the
/// audited disagreement rate is at most E up to a term that vanishes as 1/T; if the data are
/// so hard that the threshold sits at the safe bound, no threshold within the bounds meets E
/// and the slack says so. The controlled rate is that of device-answered inputs (audits see
/// no others), stricter than the rate over all inputs. The bounds must leave some inputs
/// answered on the device at the safe end, or no audit would come to move the threshold back.
///
/// With a grid, the threshold in use is the state rounded to it (changes are then only
/// reported when the rounded value moves); the bound above is on the state and still holds.
///
/// [`slack`]: Adaptive::slack
#[derive(Clone, Debug)]
pub struct Adaptive {
    state: f64,
    start: f64,
    lo: f64,
    hi: f64,
    gamma: f64,
    target: f64,
    direction: Direction,
    grid: f64,
    in_use: f64,
    observed: u64,
    disagreed: u64,
    clipped_safe: f64,
}

impl Adaptive {
    /// Starts at `start` (clamped into [lo, hi]), stepping by `gamma` towards the target
    /// disagreement rate `target` (E).
    pub fn new(start: f64, lo: f64, hi: f64, gamma: f64, target: f64, direction: Direction) -> Self {
        let start = start.clamp(lo, hi);
        Adaptive {
            state: start,
            start,
            lo,
            hi,
            gamma,
            target,
            direction,
            grid: 0.0,
            in_use: start,
            observed: 0,
            disagreed: 0,
            clipped_safe: 0.0,
        }
    }

    /// Uses the state rounded to multiples of `grid` (> 0) as the threshold.
    pub fn with_grid(mut self, grid: f64) -> Self {
        self.grid = grid;
        self.in_use = self.rounded();
        self
    }

    fn rounded(&self) -> f64 {
        if self.grid > 0.0 {
            ((self.state / self.grid).round() * self.grid).clamp(self.lo, self.hi)
        } else {
            self.state
        }
    }

    /// The threshold to use now.
    pub fn threshold(&self) -> f64 {
        self.in_use
    }

    /// One audit outcome; the change of the threshold in use, if it moved.
    pub fn observe(&mut self, disagreed: bool) -> Option<Change> {
        self.observed += 1;
        self.disagreed += disagreed as u64;
        let step = self.gamma * (disagreed as u8 as f64 - self.target);
        let raw = match self.direction {
            Direction::Up => self.state + step,
            Direction::Down => self.state - step,
        };
        self.state = raw.clamp(self.lo, self.hi);
        self.clipped_safe += match self.direction {
            Direction::Up => (raw - self.hi).max(0.0),
            Direction::Down => (self.lo - raw).max(0.0),
        };
        let from = self.in_use;
        self.in_use = self.rounded();
        (self.in_use != from).then_some(Change { observation: self.observed, from, to: self.in_use })
    }

    /// Audit outcomes observed, and how many disagreed.
    pub fn observed(&self) -> (u64, u64) {
        (self.observed, self.disagreed)
    }

    /// How far above the target the mean audited disagreement can be so far, by the guarantee:
    /// (room + clamped at the safe bound) / (γ T). Infinite before any audit.
    pub fn slack(&self) -> f64 {
        let room = match self.direction {
            Direction::Up => self.hi - self.start,
            Direction::Down => self.start - self.lo,
        };
        (room + self.clipped_safe) / (self.gamma * self.observed as f64)
    }
}

#[cfg(test)]
#[path = "guarantee_tests.rs"]
mod tests;
