//! Tests of `guarantee.rs`: the special functions and intervals against values computed with
//! SciPy 1.17 (`scipy.special`, `scipy.stats.binom`, `binomtest(...).proportion_ci`), Tango's
//! interval against an independent computation (the nuisance rate maximised numerically),
//! exact coverage where it can be summed, and seeded simulations with a known truth for Learn
//! then Test, the audit estimator and the adaptive threshold.

use super::*;

/// SplitMix64 (the core depends on nothing outside it, so the tests carry their own PRNG).
struct Rng(u64);

impl Rng {
    fn f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(1e-300)
}

#[test]
fn special_functions_match_scipy() {
    for (x, want) in [
        (0.5, 0.5723649429247),
        (1.0, 0.0),
        (3.7, 1.428072326665388),
        (10.0, 12.801827480081469),
        (100.5, 361.43554046777757),
        (12345.678, 103959.91990554606),
        (1e5, 1051287.7089736569),
        (1e7, 151180949.36947393),
    ] {
        let got = ln_gamma(x);
        assert!((got - want).abs() <= 1e-13 * want.abs().max(1.0), "ln_gamma({x}) = {got}, want {want}");
    }
    for (k, n, p, want) in [
        (0, 10, 0.1, 0.34867844009999993),
        (3, 100, 0.05, 0.2578386591160152),
        (50, 100, 0.5, 0.5397946186935889),
        (0, 100000, 1e-5, 0.3678776017665722),
        (990, 100000, 0.01, 0.38315507521859465),
        (1100, 100000, 0.01, 0.9991790300893386),
        (99998, 100000, 0.99999, 0.26424111765237535),
        (5, 500, 0.05, 9.18180826764254e-07),
        (0, 500, 0.01, 0.0065704830424146285),
        (40000, 100000, 0.4, 0.5013734150485321),
    ] {
        let got = binomial_cdf(k, n, p);
        assert!(close(got, want, 1e-9), "P(Bin({n}, {p}) <= {k}) = {got}, want {want}");
    }
    assert_eq!((binomial_cdf(10, 10, 0.3), binomial_cdf(3, 10, 0.0), binomial_cdf(3, 10, 1.0)), (1.0, 1.0, 0.0));
    for (a, b, x, want) in [
        (2.5, 3.5, 0.3, 0.29675298929566646),
        (100.0, 0.5, 0.99, 0.1567758654244408),
        (1e4, 50.0, 0.995, 0.4672536147885509),
    ] {
        let got = beta_inc(a, b, x);
        assert!(close(got, want, 1e-9), "I_{x}({a}, {b}) = {got}, want {want}");
    }
    for (x, want) in [
        (-8.0, 6.22096057427174e-16),
        (-1.5, 0.06680720126885807),
        (0.0, 0.5),
        (0.7, 0.758036347776927),
        (3.0, 0.9986501019683699),
    ] {
        assert!(close(normal_cdf(x), want, 1e-12), "Φ({x}) = {}, want {want}", normal_cdf(x));
    }
    for (p, want) in [
        (0.975, 1.959963984540054),
        (0.995, 2.5758293035489004),
        (0.95, 1.6448536269514722),
        (1e-10, -6.361340902404056),
        (0.3, -0.5244005127080409),
    ] {
        assert!(close(normal_quantile(p), want, 1e-12), "Φ⁻¹({p}) = {}, want {want}", normal_quantile(p));
    }
    assert!(close(z_two_sided(0.95), 1.959963984540054, 1e-12));
}

#[test]
fn binomial_intervals_match_scipy_and_the_closed_forms() {
    // (k, n, Clopper-Pearson lo, hi, Wilson lo, hi) at 95%.
    for (k, n, cl, ch, wl, wh) in [
        (0, 10, 0.0, 0.30849710781876294, 0.0, 0.27753279986288926),
        (10, 10, 0.6915028921812371, 1.0, 0.7224672001371109, 1.0),
        (3, 50, 0.01254858783533406, 0.1654819466037729, 0.020614970348973957, 0.1621709168883817),
        (17, 100, 0.10226491003552808, 0.2581754106321507, 0.1089356611405993, 0.2554800476760113),
        (1, 1, 0.025000000000000022, 1.0, 0.20654931437723745, 1.0),
        (500, 100000, 0.004572244150070557, 0.0054568411770586816, 0.004581445312245602, 0.005456583669211608),
        (99990, 100000, 0.9998161041546235, 0.9999520451048671, 0.999815915304549, 0.9999456792654903),
    ] {
        let cp = clopper_pearson(k, n, 0.95);
        let w = wilson(k, n, 0.95);
        assert!(close(cp.lo, cl, 1e-9) && close(cp.hi, ch, 1e-9), "CP {k}/{n}: {cp:?}, want [{cl}, {ch}]");
        assert!(close(w.lo, wl, 1e-9) && close(w.hi, wh, 1e-9), "Wilson {k}/{n}: {w:?}, want [{wl}, {wh}]");
    }
    // The closed forms at the edges: 0 of n has upper bound 1 - (α/2)^(1/n), n of n lower (α/2)^(1/n).
    for n in [1u64, 7, 300, 100_000] {
        assert!(close(clopper_pearson(0, n, 0.9).hi, 1.0 - 0.05f64.powf(1.0 / n as f64), 1e-10));
        assert!(close(clopper_pearson(n, n, 0.9).lo, 0.05f64.powf(1.0 / n as f64), 1e-10));
    }
    assert_eq!(wilson(0, 0, 0.95), Interval { lo: 0.0, hi: 1.0 });
}

/// P(Bin(n, p) = k) for all k.
fn binomial_pmf(n: u64, p: f64) -> Vec<f64> {
    (0..=n)
        .map(|k| {
            let (k, nf) = (k as f64, n as f64);
            (ln_gamma(nf + 1.0) - ln_gamma(k + 1.0) - ln_gamma(nf - k + 1.0) + k * p.ln() + (nf - k) * (1.0 - p).ln())
                .exp()
        })
        .collect()
}

#[test]
fn binomial_intervals_cover_at_their_level_computed_exactly() {
    // Coverage summed over every outcome, on a grid of true rates: no simulation noise.
    for n in [30u64, 200] {
        let cp: Vec<Interval> = (0..=n).map(|k| clopper_pearson(k, n, 0.95)).collect();
        let w: Vec<Interval> = (0..=n).map(|k| wilson(k, n, 0.95)).collect();
        let (mut cp_min, mut w_sum, mut w_min, mut count) = (1.0f64, 0.0, 1.0f64, 0.0);
        for i in 1..200 {
            let p = i as f64 / 200.0;
            let pmf = binomial_pmf(n, p);
            let cover =
                |iv: &[Interval]| pmf.iter().zip(iv).filter(|(_, iv)| iv.contains(p)).map(|(q, _)| q).sum::<f64>();
            cp_min = cp_min.min(cover(&cp));
            let c = cover(&w);
            w_sum += c;
            w_min = w_min.min(c);
            count += 1.0;
        }
        // Clopper-Pearson: at least 95% at every rate. Wilson: about 95% on average, never far below.
        assert!(cp_min >= 0.95 - 1e-9, "n = {n}: Clopper-Pearson's least coverage {cp_min}");
        assert!((0.94..0.96).contains(&(w_sum / count)), "n = {n}: Wilson's mean coverage {}", w_sum / count);
        assert!(w_min > 0.83, "n = {n}: Wilson's least coverage {w_min}");
    }
}

#[test]
fn paired_difference_matches_an_independent_computation_and_mirrors() {
    // (gains, losses, n, lo, hi): the nuisance rate maximised numerically in SciPy, roots by brentq.
    for (b, c, n, lo, hi) in [
        (5, 12, 100, -0.15741560611163918, 0.011863210727633456),
        (30, 10, 400, 0.019984923582990578, 0.0831269445287052),
        (3, 0, 50, -0.01562845631959709, 0.1621709168883862),
        (20, 20, 200, -0.06366460756259096, 0.06366460819277948),
    ] {
        let iv = paired_difference(b, c, n, 0.95);
        assert!((iv.lo - lo).abs() < 1e-6 && (iv.hi - hi).abs() < 1e-6, "{b}, {c} of {n}: {iv:?}, want [{lo}, {hi}]");
        let m = paired_difference(c, b, n, 0.95);
        assert!((m.lo + iv.hi).abs() < 1e-12 && (m.hi + iv.lo).abs() < 1e-12, "{iv:?} mirrored is {m:?}");
    }
    // It excludes 0 exactly when McNemar's score test, (b - c)² / (b + c) > z², rejects.
    for (b, c) in [(10u64, 2u64), (9, 3), (8, 3), (0, 5), (0, 6)] {
        let iv = paired_difference(b, c, 300, 0.95);
        let mcnemar = (b as f64 - c as f64).powi(2) / (b + c) as f64 > 1.959963984540054f64.powi(2);
        assert_eq!(!iv.contains(0.0), mcnemar, "{b}, {c}: {iv:?}");
    }
    // Nothing discordant: still an interval around 0, of the Wilson width z² / (n + z²).
    let iv = paired_difference(0, 0, 100, 0.95);
    let z2 = 1.959963984540054f64.powi(2);
    assert!((iv.hi - z2 / (100.0 + z2)).abs() < 1e-12 && (iv.lo + iv.hi).abs() < 1e-12, "{iv:?}");
    // All lost: the score is sqrt(n (1 + Δ) / (1 - Δ)), so hi = -(n - z²) / (n + z²).
    let all_lost = paired_difference(0, 50, 50, 0.95);
    assert!(all_lost.lo == -1.0 && (all_lost.hi + (50.0 - z2) / (50.0 + z2)).abs() < 1e-12, "{all_lost:?}");
}

#[test]
fn paired_difference_covers_at_about_its_level_computed_exactly() {
    // Every (gains, losses) of n = 80 weighted by its trinomial probability.
    let n = 80u64;
    let mut intervals = Vec::new();
    for b in 0..=n {
        for c in 0..=n - b {
            intervals.push((b, c, paired_difference(b, c, n, 0.95)));
        }
    }
    let lnf = |k: u64| ln_gamma(k as f64 + 1.0);
    let mut coverages = Vec::new();
    for (pg, pl) in [(0.05, 0.05), (0.02, 0.08), (0.1, 0.03), (0.15, 0.15), (0.01, 0.04), (0.3, 0.1)] {
        let d = pg - pl;
        let cover: f64 = intervals
            .iter()
            .filter(|(_, _, iv)| iv.contains(d))
            .map(|&(b, c, _)| {
                let rest = n - b - c;
                (lnf(n) - lnf(b) - lnf(c) - lnf(rest)
                    + b as f64 * f64::ln(pg)
                    + c as f64 * f64::ln(pl)
                    + rest as f64 * f64::ln(1.0 - pg - pl))
                .exp()
            })
            .sum();
        coverages.push(cover);
    }
    // Tango's interval is asymptotic: close to nominal, a little either side at n = 80 (seen:
    // 0.956, 0.937, 0.954, 0.947, 0.971, 0.950).
    assert!(coverages.iter().all(|c| (0.93..0.975).contains(c)), "{coverages:?}");
}

#[test]
fn learn_then_test_walks_the_sequence_while_rejected() {
    let t = |losses| Tally { n: 1000, losses };
    // eps 0.05, delta 0.1: P(Bin(1000, 0.05) <= k) is 0.0013 at 30 losses, 0.081 at 40, 0.106
    // at 41 (SciPy), 0.93 at 60.
    let cands = [t(0), t(10), t(30), t(40), t(41), t(20)];
    let cert = learn_then_test(&cands, 0.05, 0.1);
    assert_eq!(cert.chosen, Some(3), "{:?}", cert.p_values);
    assert!(close(cert.p_values[3], 0.080636573256691, 1e-9) && close(cert.p_values[4], 0.10629617073627556, 1e-9));
    // The last candidate would pass on its own, but the sequence stopped before it.
    assert!(cert.p_values[5] <= 0.1 && cert.p_values[4] > 0.1);
    assert_eq!(learn_then_test(&[t(60), t(0)], 0.05, 0.1).chosen, None);
    assert_eq!(learn_then_test(&[], 0.05, 0.1).chosen, None);
}

#[test]
fn inputs_needed_is_where_the_test_starts_to_reject() {
    // No losses: (1 - eps)^n <= delta.
    for (eps, delta) in [(0.01, 0.1), (0.05, 0.05), (0.001, 0.2)] {
        let want = (f64::ln(delta) / f64::ln(1.0 - eps)).ceil() as u64;
        assert_eq!(inputs_needed(0.0, eps, delta, 1 << 40), Some(want), "{eps} {delta}");
    }
    let n = inputs_needed(0.006, 0.01, 0.1, 1 << 40).unwrap();
    let rejects = |n: u64| binomial_p_value((0.006 * n as f64).round() as u64, n, 0.01) <= 0.1;
    assert!(rejects(n) && !rejects(n - 1), "{n}");
    assert!((900..2000).contains(&n), "{n}"); // the normal approximation says about 1,020
    assert_eq!(inputs_needed(0.01, 0.01, 0.1, 1 << 40), None);
    assert_eq!(inputs_needed(0.0099, 0.01, 0.1, 10_000), None);
}

/// A synthetic first stage: confidence u ~ U(0, 1); it is wrong with probability a (1 - u);
/// the last stage is right with probability q (q = 1: the loss is disagreement with it). An
/// input exits at threshold θ when u >= θ, so the true loss rate P(u >= θ, first wrong, last
/// right) is q a (1 - θ)² / 2. Candidates θ_j = 1 - j / 100, j = 1..100, safest first.
fn ltt_violations(a: f64, q: f64, eps: f64, delta: f64, draws: u64, n: u64, seed: u64) -> (f64, f64, f64) {
    let loss = |j: usize| q * a * (j as f64 / 100.0).powi(2) / 2.0;
    let (mut ltt_bad, mut naive_bad, mut certified) = (0u64, 0u64, 0u64);
    let mut rng = Rng(seed);
    for _ in 0..draws {
        let mut bucket = [0u64; 101];
        for _ in 0..n {
            let u = rng.f64();
            let lossy = rng.chance(a * (1.0 - u)) & rng.chance(q);
            if lossy {
                bucket[((1.0 - u) * 100.0).ceil().clamp(1.0, 100.0) as usize] += 1;
            }
        }
        let tallies: Vec<Tally> = (1..=100)
            .scan(0, |acc, j| {
                *acc += bucket[j];
                Some(Tally { n, losses: *acc })
            })
            .collect();
        let cert = learn_then_test(&tallies, eps, delta);
        if let Some(i) = cert.chosen {
            certified += 1;
            ltt_bad += (loss(i + 1) > eps) as u64;
        }
        // The naive choice: the cheapest threshold whose observed loss rate is within eps.
        if let Some(i) = tallies.iter().rposition(|t| t.losses as f64 <= eps * n as f64) {
            naive_bad += (loss(i + 1) > eps) as u64;
        }
    }
    let d = draws as f64;
    (ltt_bad as f64 / d, naive_bad as f64 / d, certified as f64 / d)
}

#[test]
fn learn_then_test_violates_at_most_delta_of_the_time() {
    let (draws, delta) = (300u64, 0.1);
    // Monte-Carlo allowance: three standard errors of a frequency whose truth is delta.
    let allowance = 3.0 * (delta * (1.0 - delta) / draws as f64).sqrt();
    // With labels (the last stage right 85% of the time) and without (disagreement).
    for (a, q, eps) in [(0.6, 0.85, 0.05), (0.4, 1.0, 0.03)] {
        let (ltt, naive, certified) = ltt_violations(a, q, eps, delta, draws, 500, 14);
        // Seen: 0.037 (naive 0.47) with labels, 0.040 (naive 0.48) without; both certified in every draw.
        assert!(ltt <= delta + allowance, "LTT violated in {ltt} of the draws");
        assert!(naive > 0.3, "the naive choice should violate often, did {naive}: the simulation has no power");
        assert!(certified > 0.95, "LTT certified a threshold in only {certified} of the draws");
    }
}

struct Draws {
    mean: f64,
    sd: f64,
    coverage: f64,
}

fn audit_draws(draws: u64, n: usize, rate: impl Fn(usize) -> f64, p: impl Fn(usize) -> f64, seed: u64) -> (Draws, f64) {
    let truth = (0..n).map(&p).sum::<f64>() / n as f64;
    let mut rng = Rng(seed);
    let (mut sum, mut sum2, mut covered, mut naive) = (0.0, 0.0, 0u64, 0.0);
    for _ in 0..draws {
        let mut tally = AuditTally::default();
        for i in 0..n {
            let disagreed = rng.chance(p(i));
            let audited = rng.chance(rate(i));
            tally.record(rate(i), audited.then_some(disagreed));
        }
        let e = tally.estimate(0.95).expect("audits");
        sum += e.rate;
        sum2 += e.rate * e.rate;
        covered += e.interval.contains(truth) as u64;
        naive += e.disagreed as f64 / e.audited as f64;
    }
    let d = draws as f64;
    let mean = sum / d;
    (Draws { mean, sd: (sum2 / d - mean * mean).sqrt(), coverage: covered as f64 / d }, naive / d)
}

#[test]
fn audit_estimate_is_unbiased_and_covers_about_95_percent() {
    let draws = 400u64;
    let band = 3.0 * (0.95 * 0.05 / draws as f64).sqrt();
    // One audit rate: the binomial proportion on the audited inputs.
    let (one, _) = audit_draws(draws, 2000, |_| 0.2, |_| 0.05, 7);
    assert!((one.mean - 0.05).abs() < 3.0 * one.sd / (draws as f64).sqrt(), "biased: {}", one.mean);
    assert!((one.coverage - 0.95).abs() < band, "coverage {}", one.coverage);
    // Rates that vary with the disagreement (audited less where it disagrees more): the
    // unweighted proportion is biased, Horvitz-Thompson is not.
    let rate = |i: usize| if i < 1000 { 0.1 } else { 0.4 };
    let p = |i: usize| if i < 1000 { 0.08 } else { 0.03 };
    let (ht, naive) = audit_draws(draws, 2000, rate, p, 8);
    assert!((ht.mean - 0.055).abs() < 3.0 * ht.sd / (draws as f64).sqrt(), "biased: {}", ht.mean);
    assert!((naive - 0.055).abs() > 0.01, "the unweighted proportion should be biased: {naive}");
    assert!(ht.coverage > 0.95 - band && ht.coverage < 0.995, "coverage {}", ht.coverage);
}

#[test]
fn audit_verdicts_and_edges() {
    let mut t = AuditTally::default();
    assert!(t.estimate(0.95).is_none());
    for i in 0..1000 {
        t.record(0.5, (i % 2 == 0).then_some(i % 20 == 0)); // 500 audits, 50 disagreed: 10%
    }
    t.record(0.0, None); // not auditable: left out
    let e = t.estimate(0.95).unwrap();
    assert_eq!((e.answered, e.audited, e.disagreed, e.method), (1000, 500, 50, AuditMethod::Binomial));
    assert_eq!(e.interval, wilson(50, 500, 0.95));
    assert_eq!(
        (e.verdict(0.05), e.verdict(0.1), e.verdict(0.2)),
        (Verdict::Exceeds, Verdict::Unclear, Verdict::Within)
    );
    let all = e.over_all_inputs(4000);
    assert!((all.rate - 0.025).abs() < 1e-12 && (all.interval.hi - e.interval.hi / 4.0).abs() < 1e-12);
    // Varying rates with no disagreement seen still give an interval above 0.
    let mut v = AuditTally::default();
    for i in 0..400 {
        v.record(if i < 200 { 0.1 } else { 0.5 }, (i % 5 == 0).then_some(false));
    }
    let e = v.estimate(0.95).unwrap();
    assert_eq!((e.method, e.rate, e.interval.lo), (AuditMethod::HorvitzThompson, 0.0, 0.0));
    assert!(e.interval.hi > 0.01 && e.interval.hi < 0.2, "{e:?}");
}

#[test]
fn the_adaptive_threshold_tracks_a_drift_the_static_one_does_not() {
    // Confidence u ~ U(0, 1), the device answers when u >= θ; it disagrees with the host with
    // probability a (1 - u): among the inputs it answers, a (1 - θ) / 2. E = 5%: θ = 2/3 meets
    // it while a = 0.3; half-way a becomes 0.9 (θ = 0.889 would meet it). Audit rate 0.5.
    let (e, half) = (0.05, 40_000usize);
    let run = |adaptive: bool| {
        let mut rng = Rng(2106);
        let mut ad = Adaptive::new(2.0 / 3.0, 0.3, 0.97, 0.02, e, Direction::Up).with_grid(0.01);
        let (mut answered, mut disagreed, mut changes) = ([0u64; 2], [0u64; 2], 0u64);
        for i in 0..2 * half {
            let phase = i / half;
            let a = if phase == 0 { 0.3 } else { 0.9 };
            let theta = if adaptive { ad.threshold() } else { 2.0 / 3.0 };
            let u = rng.f64();
            if u < theta {
                continue; // forwarded: the host's answer
            }
            let d = rng.chance(a * (1.0 - u));
            answered[phase] += 1;
            disagreed[phase] += d as u64;
            if rng.chance(0.5) {
                changes += ad.observe(d).is_some() as u64;
            }
        }
        let rate = |p: usize| disagreed[p] as f64 / answered[p] as f64;
        let fwd = |p: usize| 1.0 - answered[p] as f64 / half as f64;
        (rate(0), rate(1), fwd(1), changes, ad)
    };
    let (s0, s1, sf, _, _) = run(false);
    let (a0, a1, af, changes, ad) = run(true);
    // Seen: static 0.049 then 0.148; adaptive 0.051 then 0.054, forwarding 0.90 after the drift,
    // 1,289 changes on a 0.01 grid.
    assert!(s0 < e + 0.01 && s1 > 2.0 * e, "the drift should break the static threshold: {s0} {s1}");
    assert!(a1 <= e + 0.01, "the adaptive threshold let {a1} disagree after the drift");
    // It pays by forwarding more (static: 0.66 throughout), but still answers on the device.
    assert!(a0 <= e + 0.01 && af > sf + 0.1 && af < 0.95, "{a0} {af} {sf}");
    assert!((ad.threshold() - 0.889).abs() < 0.06, "θ ended at {}", ad.threshold());
    assert!(changes > 10);
    let (t, k) = ad.observed();
    assert!(k as f64 / t as f64 <= e + ad.slack());
}

#[test]
fn the_adaptive_guarantee_holds_on_any_sequence_and_the_slack_names_the_bound() {
    let e = 0.1;
    for (direction, p) in [(Direction::Up, 0.3), (Direction::Down, 0.3), (Direction::Up, 0.02)] {
        let mut ad = Adaptive::new(0.5, 0.2, 0.8, 0.05, e, direction);
        let mut rng = Rng(99);
        for t in 1..=5000u64 {
            // Errors that ignore the threshold altogether: the worst case for the update.
            let c = ad.observe(rng.chance(p));
            if let Some(c) = c {
                assert_eq!((c.observation, c.to), (t, ad.threshold()));
            }
            let (n, k) = ad.observed();
            assert!(k as f64 / n as f64 <= e + ad.slack() + 1e-12, "t {t}");
        }
        let safe = if direction == Direction::Up { 0.8 } else { 0.2 };
        if p > e {
            // Too many errors for any threshold: pinned at the safe bound, and the slack says so.
            assert_eq!(ad.threshold(), safe);
            assert!(ad.slack() > 0.1, "{}", ad.slack());
        } else {
            assert!(ad.slack() < 0.01, "{}", ad.slack());
        }
    }
}
