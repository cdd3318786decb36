//! `calibrate`'s summary as text: the models, the guarantee, the chosen point with its 95%
//! intervals, its cost deployed and in this process, the figure of merit, the files written.

use super::{eval, guaranteed, Calibration};

/// The calibration summary as text.
pub fn summary_text(c: &Calibration) -> String {
    let mut t = format!("calibrated on {} ({} inputs, {} failed); logits {}\n", c.data, c.n, c.errors, c.cache);
    let temps: Vec<String> = c.singles.iter().zip(&c.temperatures).map(|(s, t)| format!("{} {t:.3}", s.name)).collect();
    t += &format!("fitted temperatures: {}\n", temps.join(", "));
    let top1 = if c.agreement { "agreement with the last stage" } else { "top-1" };
    if c.agreement {
        t += "no labels (--agreement): every figure is the agreement with the last stage's answer\n";
    }
    for s in &c.singles {
        t += &format!("  {:<28} {top1} {:<26} {:.0} M MACs\n", s.name, eval::pct_ci(s.top1, s.top1_ci), s.macs / 1e6);
    }
    if let Some(g) = &c.guarantee {
        t += &guaranteed::text(g);
    }
    let p = &c.chosen.point;
    let (lo, hi) = c.chosen.forwarded_interval;
    let head = match (&c.guarantee, c.met) {
        (Some(_), true) => "certified".to_owned(),
        (Some(_), false) => "NOT CERTIFIED, the most forwarding threshold tested".to_owned(),
        (None, true) => format!("target met {}", c.target),
        (None, false) => format!("TARGET NOT MET {}, closest point", c.target),
    };
    t += &format!(
        "{head}: {} threshold {:.4}\n  {top1} {}, forwarded {} (99% interval for a run of {} inputs: {:.1}%..{:.1}%)\n",
        c.chosen.curve,
        p.threshold,
        eval::pct_ci(p.top1, c.chosen.top1_ci),
        eval::pct_ci(p.forwarded, c.chosen.forwarded_ci),
        c.n,
        lo * 100.0,
        hi * 100.0
    );
    if let Some(last) = c.singles.last() {
        t += &format!("  vs {} alone: {}\n", last.name, c.chosen.vs_last.text());
    }
    if let Some(k) = &c.chosen.target_check {
        t += &format!(
            "  how sure: 95% lower bound of its {top1} {:.1}% {} the target {:.1}% (p-value of falling short {:.3}; chosen on these same images, so optimistic: --max-drop certifies)\n",
            k.top1_lower * 100.0,
            if k.holds_at_95 { "reaches" } else { "is below" },
            k.target * 100.0,
            k.p_value
        );
    }
    t += &format!(
        "  {:.0} M MACs per input: {:.1}% less compute than {} alone\n",
        p.cost.macs / 1e6,
        c.chosen.compute_saved_vs_large * 100.0,
        c.singles.last().map_or("", |s| s.name.as_str())
    );
    if let Some(e) = c.chosen.device_energy_saved_vs_offload_all {
        t += &format!(
            "  deployed (last stage on the host, {} payloads): device energy {:.1} mJ per input ({}), {:.1}% less than offloading every input; {:.1} ms per input; {:.0} link bytes per input\n",
            c.payload,
            p.cost.device_mj,
            if c.cost_model.has_estimates() { "estimate" } else { "measured" },
            e * 100.0,
            p.cost.ms,
            p.cost.link_bytes
        );
    }
    let here = &c.chosen.in_process;
    let energy = c.timing.stages.first().map_or("", |s| s.mj.source.as_str());
    t += &format!(
        "  every stage in this process (as classify runs it): {:.1} ms and {:.1} mJ per input; timed on {} inputs after {} warm-up, {} thread(s); energy {energy}\n",
        here.ms, here.device_mj, c.timing.inputs, c.timing.warmup, c.timing.threads
    );
    match &c.merit {
        Some(m) => {
            t += &format!(
                "  figure of merit: at the accuracy of {} ({:.2}%), the cascade needs {:.0} M MACs against {:.0} M: {:.2}x {}\n",
                m.model,
                m.model_top1 * 100.0,
                m.cascade_macs / 1e6,
                m.model_macs / 1e6,
                m.reduction,
                if m.reduction > 1.0 + 1e-9 { "less compute" } else { "no compute saved at that accuracy" }
            )
        }
        None => t += "  figure of merit: the cascade matches no single model's accuracy\n",
    }
    if let Some(o) = &c.out {
        t += &format!("wrote {o}; curves {} and {}; plot {}", c.curves_csv, c.curves_json, c.plot);
    } else {
        t += &format!("no config written; curves {} and {}; plot {}", c.curves_csv, c.curves_json, c.plot);
    }
    t
}
