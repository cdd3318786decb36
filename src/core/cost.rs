//! The cost model: what one input costs on average, given the fraction of inputs that reach
//! each stage. Three currencies: multiply-accumulates (on device and host), device energy in
//! millijoules, and end-to-end milliseconds. The last stage may sit behind a link, priced from
//! its payload bytes, bandwidth, round-trip time and energy per byte. Every figure says
//! whether it was measured or estimated. Pure: plain numbers in, plain numbers out.

use serde::Serialize;

/// Where a figure came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figure {
    pub value: f64,
    /// `measured: ...` (naming the sensor or clock) or `estimate: ...` (naming the assumption).
    pub source: String,
}

impl Figure {
    pub fn measured(value: f64, how: &str) -> Figure {
        Figure { value, source: format!("measured: {how}") }
    }
    pub fn estimate(value: f64, how: &str) -> Figure {
        Figure { value, source: format!("estimate: {how}") }
    }
    pub fn is_estimate(&self) -> bool {
        self.source.starts_with("estimate")
    }
}

/// One stage that runs on the device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LocalStage {
    pub macs: u64,
    /// Milliseconds per input (preprocess + inference + decision).
    pub ms: Figure,
    /// Device millijoules per input.
    pub mj: Figure,
}

/// The link to the host.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Link {
    /// Mean request bytes on the wire per offloaded input (payload and framing).
    pub bytes_up: Figure,
    /// Mean reply bytes per offloaded input.
    pub bytes_down: Figure,
    /// Payload bytes per second the link carries.
    pub bytes_per_s: Figure,
    pub rtt_ms: Figure,
    /// Device energy per byte sent or received, in nanojoules.
    pub nj_per_byte: Figure,
}

impl Link {
    /// Milliseconds to move one request and its reply.
    pub fn transfer_ms(&self) -> f64 {
        let bytes = self.bytes_up.value + self.bytes_down.value;
        self.rtt_ms.value + 1e3 * bytes / self.bytes_per_s.value.max(1.0)
    }

    /// Device millijoules spent on the radio or UART for one request and its reply.
    pub fn transfer_mj(&self) -> f64 {
        (self.bytes_up.value + self.bytes_down.value) * self.nj_per_byte.value * 1e-6
    }
}

/// The last stage on a host.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostStage {
    pub macs: u64,
    /// The host's own milliseconds per input.
    pub host_ms: Figure,
    /// The device's milliseconds to encode the payload (e.g. the crop as JPEG).
    pub encode_ms: Figure,
    /// The device's millijoules to encode the payload.
    pub encode_mj: Figure,
    pub link: Link,
    /// Device power while it waits for the host (idle), in watts.
    pub device_wait_w: Figure,
}

/// A cascade priced stage by stage. With `remote`, the last stage runs on a host; otherwise
/// every stage is in `local` (as `classify` runs it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CostModel {
    pub local: Vec<LocalStage>,
    pub remote: Option<HostStage>,
}

/// The expected cost of one input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Cost {
    /// Multiply-accumulates, device and host together.
    pub macs: f64,
    pub device_macs: f64,
    pub device_mj: f64,
    pub ms: f64,
    pub link_bytes: f64,
}

impl CostModel {
    pub fn stages(&self) -> usize {
        self.local.len() + self.remote.is_some() as usize
    }

    /// Expected cost per input when a fraction `reach[i]` of inputs runs stage i (reach[0] is 1).
    pub fn expected(&self, reach: &[f64]) -> Cost {
        let mut c = Cost::default();
        for (s, &p) in self.local.iter().zip(reach) {
            c.macs += p * s.macs as f64;
            c.device_macs += p * s.macs as f64;
            c.device_mj += p * s.mj.value;
            c.ms += p * s.ms.value;
        }
        if let Some(r) = &self.remote {
            let p = reach.get(self.local.len()).copied().unwrap_or(0.0);
            let wait_ms = r.link.transfer_ms() + r.host_ms.value;
            c.macs += p * r.macs as f64;
            c.ms += p * (r.encode_ms.value + wait_ms);
            c.device_mj += p * (r.encode_mj.value + r.link.transfer_mj() + r.device_wait_w.value * wait_ms);
            c.link_bytes += p * (r.link.bytes_up.value + r.link.bytes_down.value);
        }
        c
    }

    /// The cost of sending every input straight to the host (no local model): the baseline
    /// the cascade's device energy is compared against. None without a remote stage.
    pub fn offload_everything(&self) -> Option<Cost> {
        let r = self.remote.as_ref()?;
        let only = CostModel { local: vec![], remote: Some(r.clone()) };
        Some(only.expected(&[1.0]))
    }

    /// The cost of running only stage `i` on every input (a single model alone).
    pub fn single(&self, i: usize) -> Cost {
        let mut reach = vec![0.0; self.stages()];
        if i < self.local.len() {
            let only = CostModel { local: vec![self.local[i].clone()], remote: None };
            return only.expected(&[1.0]);
        }
        reach[i] = 1.0;
        let only = CostModel { local: vec![], remote: self.remote.clone() };
        only.expected(&[1.0])
    }

    /// True when any figure in the model is an estimate.
    pub fn has_estimates(&self) -> bool {
        self.local.iter().any(|s| s.ms.is_estimate() || s.mj.is_estimate())
            || self.remote.as_ref().is_some_and(|r| {
                let l = &r.link;
                [
                    &r.host_ms,
                    &r.encode_ms,
                    &r.encode_mj,
                    &r.device_wait_w,
                    &l.bytes_up,
                    &l.bytes_down,
                    &l.bytes_per_s,
                    &l.rtt_ms,
                    &l.nj_per_byte,
                ]
                .iter()
                .any(|f| f.is_estimate())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> CostModel {
        CostModel {
            local: vec![LocalStage {
                macs: 400,
                ms: Figure::measured(10.0, "clock"),
                mj: Figure::estimate(50.0, "5 W x 10 ms"),
            }],
            remote: Some(HostStage {
                macs: 900,
                host_ms: Figure::measured(30.0, "host clock"),
                encode_ms: Figure::measured(1.0, "clock"),
                encode_mj: Figure::estimate(4.0, "4 W x 1 ms"),
                link: Link {
                    bytes_up: Figure::measured(9_000.0, "payload"),
                    bytes_down: Figure::measured(1_000.0, "reply"),
                    bytes_per_s: Figure::estimate(100_000.0, "uart"),
                    rtt_ms: Figure::estimate(5.0, "uart"),
                    nj_per_byte: Figure::estimate(200.0, "uart"),
                },
                device_wait_w: Figure::estimate(2.0, "idle"),
            }),
        }
    }

    #[test]
    fn link_arithmetic() {
        let m = model();
        let l = &m.remote.as_ref().unwrap().link;
        // 10,000 bytes at 100,000 B/s = 100 ms, plus 5 ms round trip.
        assert!((l.transfer_ms() - 105.0).abs() < 1e-9);
        // 10,000 bytes x 200 nJ = 2 mJ.
        assert!((l.transfer_mj() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn expected_cost_weights_each_stage_by_its_reach() {
        let m = model();
        let c = m.expected(&[1.0, 0.25]);
        assert!((c.macs - (400.0 + 0.25 * 900.0)).abs() < 1e-9);
        assert!((c.device_macs - 400.0).abs() < 1e-9);
        // encode 1 ms, 4 mJ; wait = 105 + 30 = 135 ms; device energy there = 2 mJ + 2 W x 135 ms.
        assert!((c.ms - (10.0 + 0.25 * 136.0)).abs() < 1e-9);
        assert!((c.device_mj - (50.0 + 0.25 * 276.0)).abs() < 1e-9);
        assert!((c.link_bytes - 2_500.0).abs() < 1e-9);
        let all = m.offload_everything().unwrap();
        assert!((all.device_mj - 276.0).abs() < 1e-9 && (all.macs - 900.0).abs() < 1e-9);
        assert!((m.single(0).macs - 400.0).abs() < 1e-9);
        assert!((m.single(1).ms - 136.0).abs() < 1e-9);
        assert!(m.has_estimates());
    }
}
