//! What this CPU offers the kernels: the features that decide which kernels can run (NEON, the
//! dot product on arm64; AVX2, AVX-512, VNNI on x86_64), tract's own choice of kernels with
//! them, and a fingerprint of the CPU that keys the cache of measured kernel choices.

use edgecascade_kernels::{DwKernel, GemmKernel};
use tract_onnx::prelude::*;

/// The CPU features that decide which kernels run here, the int8 kernels of this build that
/// can run, then the instruction sets tract itself found and the matrix-product kernels it
/// picks with them, e.g. why a Pi 5 (Cortex-A76: dot product) and a Pi 4 (Cortex-A72: NEON
/// only) differ: `aarch64: neon yes, dotprod no, ...; int8 kernels: matrix plain, neon;
/// depthwise plain, neon; tract isa ...: float products arm64simd_mmm_f32_8x8_gen, int8
/// products arm64simd_mmm_i32_8x8` on a Pi 4.
pub fn cpu_features() -> String {
    let found = probe_features();
    let list: Vec<String> = found.iter().map(|(n, on)| format!("{n} {}", if *on { "yes" } else { "no" })).collect();
    let list = if list.is_empty() { "no kernel features probed".to_owned() } else { list.join(", ") };
    format!("{}: {list}; {}; {}", std::env::consts::ARCH, int8_kernels(), tract_kernels())
}

/// The int8 kernels of `edgecascade_kernels` this CPU can run (besides tract's).
pub(crate) fn int8_kernels() -> String {
    let g: Vec<&str> = GemmKernel::available_here().iter().map(|k| k.name()).collect();
    let d: Vec<&str> = DwKernel::available_here().iter().map(|k| k.name()).collect();
    format!("int8 kernels: matrix {}, tract; depthwise {}", g.join(", "), d.join(", "))
}

/// The instruction sets tract-linalg probed (its own detection, which `TRACT_CPU_ISA` can edit)
/// and the kernels its dispatch prefers for a float (f32 accumulator) and an integer (i32
/// accumulator: int8 operands) matrix product of a convolution's shape.
fn tract_kernels() -> String {
    use tract_linalg::{isa, MmmDispatch};
    let isa = isa::native();
    let dispatch = MmmDispatch::native();
    // A pointwise convolution of Lite0's middle blocks: 80 x 480 weights over 14 x 14 pixels.
    let kernel = |acc: DatumType| {
        dispatch
            .preferred_kernel(acc, Some(80), Some(480), Some(196))
            .map_or_else(|| "tract's generic one".to_owned(), |k| k.name().to_owned())
    };
    format!("tract isa {isa:?}: float products {}, int8 products {}", kernel(DatumType::F32), kernel(DatumType::I32))
}

/// Identifies this CPU for the kernel-choice cache: the architecture, the model name the kernel
/// reports, the probed features and the kernels this build can run here. Two machines with the
/// same fingerprint pick kernels alike.
pub fn fingerprint() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("CPU part") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let features: Vec<String> = probe_features().iter().map(|(n, on)| format!("{n}={}", *on as u8)).collect();
    format!("{} | {model} | {} | {}", std::env::consts::ARCH, features.join(","), int8_kernels())
}

#[cfg(target_arch = "aarch64")]
fn probe_features() -> Vec<(&'static str, bool)> {
    use std::arch::is_aarch64_feature_detected as has;
    vec![("neon", has!("neon")), ("dotprod", has!("dotprod")), ("i8mm", has!("i8mm")), ("fp16", has!("fp16"))]
}

#[cfg(target_arch = "x86_64")]
fn probe_features() -> Vec<(&'static str, bool)> {
    use std::arch::is_x86_feature_detected as has;
    vec![
        ("avx2", has!("avx2")),
        ("fma", has!("fma")),
        ("avx512f", has!("avx512f")),
        ("avx512bw", has!("avx512bw")),
        ("avx512vnni", has!("avx512vnni")),
        ("avxvnni", has!("avxvnni")),
    ]
}

#[cfg(target_arch = "arm")]
fn probe_features() -> Vec<(&'static str, bool)> {
    // The armv7 target does not assume NEON at compile time and std cannot probe it on stable:
    // ask tract, which reads /proc/cpuinfo at run time (under qemu-user, the host's: "no").
    use tract_linalg::isa::{native, Isa};
    vec![("neon", native().has(Isa::ArmNeon))]
}

#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64", target_arch = "arm")))]
fn probe_features() -> Vec<(&'static str, bool)> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_features_name_the_features_and_the_kernels() {
        let s = super::cpu_features();
        assert!(s.starts_with(std::env::consts::ARCH), "{s}");
        assert!(s.contains("; int8 kernels: matrix plain") && s.contains("depthwise plain"), "{s}");
        assert!(s.contains("; tract isa ") && s.contains("float products") && s.contains("int8 products"), "{s}");
        #[cfg(target_arch = "aarch64")]
        {
            // NEON is baseline on aarch64; tract's int8 products take the NEON SDOT kernel when
            // the CPU has the dot product (a Pi 5's Cortex-A76), never without it (a Pi 4's
            // Cortex-A72). CPUs with SVE2 (qemu's default `max`) get SVE kernels instead.
            use std::arch::is_aarch64_feature_detected as has;
            assert!(s.contains("neon yes"), "{s}");
            if std::env::var_os("TRACT_DOTPROD_DISABLE").is_none() && std::env::var_os("TRACT_CPU_ISA").is_none() {
                let dot = has!("dotprod");
                assert!(s.contains(if dot { "dotprod yes" } else { "dotprod no" }), "{s}");
                if !dot {
                    assert!(s.contains("int8 products arm64simd_mmm_i32_8x8") && !s.contains("_dot"), "{s}");
                } else if !has!("sve2") {
                    assert!(s.contains("int8 products arm64simd_mmm_i32_8x8_dot"), "{s}");
                }
            }
        }
    }

    #[test]
    fn the_fingerprint_names_the_architecture_and_kernels() {
        let f = super::fingerprint();
        assert!(f.starts_with(std::env::consts::ARCH) && f.contains("int8 kernels: matrix plain"), "{f}");
        assert_eq!(f, super::fingerprint());
    }
}
