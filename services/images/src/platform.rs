//! Platforms (os/architecture/variant): the host's, parsing "linux/arm64/v8", and picking
//! the best manifest of an index the way containerd's platform matcher does.

use crate::db::PlatformRecord;
#[cfg(test)]
use crate::error::{Error, Result};

/// Go's GOARCH name of a Rust target architecture.
fn goarch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The host platform, with the variant Docker reports (arm64 -> v8, arm -> v7/v6).
pub fn host() -> PlatformRecord {
    let architecture = goarch(std::env::consts::ARCH).to_string();
    let variant = match architecture.as_str() {
        "arm64" => "v8".to_string(),
        "arm" => arm_variant_from_cpuinfo(),
        _ => String::new(),
    };
    PlatformRecord { os: std::env::consts::OS.to_string(), architecture, variant, os_version: String::new() }
}

fn arm_variant_from_cpuinfo() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let version = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("CPU architecture").map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_default();
    match version.as_str() {
        "5" | "5T" | "5TE" | "5TEJ" => "v5".into(),
        "6" | "6TEJ" => "v6".into(),
        _ => "v7".into(),
    }
}

/// Normalizes names the way containerd does ("aarch64" -> "arm64", arm64's default
/// variant "v8" -> "").
pub fn normalize(platform: &PlatformRecord) -> PlatformRecord {
    let os = platform.os.to_lowercase();
    let mut architecture = platform.architecture.to_lowercase();
    let mut variant = platform.variant.to_lowercase();
    match architecture.as_str() {
        "i386" => architecture = "386".into(),
        "x86_64" | "x86-64" => {
            architecture = "amd64".into();
            if variant == "v1" {
                variant.clear();
            }
        }
        "amd64" if variant == "v1" => variant.clear(),
        "aarch64" | "arm64" => {
            architecture = "arm64".into();
            if variant == "8" || variant == "v8" {
                variant.clear();
            }
        }
        "armhf" => {
            architecture = "arm".into();
            variant = "v7".into();
        }
        "armel" => {
            architecture = "arm".into();
            variant = "v6".into();
        }
        "arm" => {
            if variant.is_empty() || variant == "7" {
                variant = "v7".into();
            } else if variant == "5" || variant == "6" || variant == "8" {
                variant = format!("v{variant}");
            }
        }
        _ => {}
    }
    PlatformRecord { os, architecture, variant, os_version: platform.os_version.clone() }
}

/// Parses "os/arch[/variant]" (as `--platform` takes it); "arch" alone means linux.
#[cfg(test)]
pub fn parse(text: &str) -> Result<PlatformRecord> {
    let parts: Vec<&str> = text.trim().split('/').collect();
    let record = match parts.as_slice() {
        [arch] if !arch.is_empty() => {
            PlatformRecord { os: "linux".into(), architecture: arch.to_string(), ..Default::default() }
        }
        [os, arch] if !os.is_empty() && !arch.is_empty() => {
            PlatformRecord { os: os.to_string(), architecture: arch.to_string(), ..Default::default() }
        }
        [os, arch, variant] if !os.is_empty() && !arch.is_empty() => PlatformRecord {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: variant.to_string(),
            ..Default::default()
        },
        _ => {
            return Err(Error::InvalidArgument(format!(
                "invalid platform {text:?}: expected os/arch[/variant], e.g. linux/arm64/v8"
            )));
        }
    };
    Ok(normalize(&record))
}

pub fn format(platform: &PlatformRecord) -> String {
    if platform.variant.is_empty() {
        format!("{}/{}", platform.os, platform.architecture)
    } else {
        format!("{}/{}/{}", platform.os, platform.architecture, platform.variant)
    }
}

/// How well `candidate` serves `wanted`: `None` when it cannot run, else a rank where
/// lower is better (exact variant first, then older compatible variants).
pub fn rank(wanted: &PlatformRecord, candidate: &PlatformRecord) -> Option<u32> {
    let wanted = normalize(wanted);
    let candidate = normalize(candidate);
    if wanted.os != candidate.os || wanted.architecture != candidate.architecture {
        return None;
    }
    if wanted.variant == candidate.variant {
        return Some(0);
    }
    if wanted.architecture == "arm" {
        // An armv7 host runs v6 and v5 binaries, preferring the newest.
        let order = ["v8", "v7", "v6", "v5"];
        let want = order.iter().position(|v| *v == wanted.variant)?;
        let have = order.iter().position(|v| *v == candidate.variant)?;
        return (have > want).then(|| (have - want) as u32);
    }
    if wanted.architecture == "amd64" {
        // amd64 microarchitecture levels: a v3 host runs v2 and baseline images.
        let level = |v: &str| if v.is_empty() { Some(1) } else { v.strip_prefix('v')?.parse::<u32>().ok() };
        let (want, have) = (level(&wanted.variant)?, level(&candidate.variant)?);
        return (have <= want).then(|| want - have);
    }
    // No variant asked for: any variant serves, a missing one best.
    if wanted.variant.is_empty() {
        return Some(1);
    }
    None
}

/// Index of the best candidate for `wanted`, if any.
pub fn best<'a>(
    wanted: &PlatformRecord,
    candidates: impl Iterator<Item = Option<&'a PlatformRecord>>,
) -> Option<usize> {
    candidates.enumerate().filter_map(|(i, p)| Some((rank(wanted, p?)?, i))).min().map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> PlatformRecord {
        parse(text).unwrap()
    }

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(format(&p("linux/arm64/v8")), "linux/arm64");
        assert_eq!(format(&p("linux/aarch64")), "linux/arm64");
        assert_eq!(format(&p("linux/arm")), "linux/arm/v7");
        assert_eq!(format(&p("amd64")), "linux/amd64");
        assert!(parse("linux/").is_err());
        assert!(parse("a/b/c/d").is_err());
    }

    #[test]
    fn host_is_known() {
        let host = host();
        assert_eq!(host.os, "linux");
        assert!(!host.architecture.is_empty());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(format(&normalize(&host)), "linux/amd64");
    }

    #[test]
    fn picks_the_best_variant() {
        let candidates = [p("linux/amd64"), p("linux/arm64/v8"), p("linux/arm/v6"), p("linux/arm/v7")];
        let pick = |wanted: &str| best(&p(wanted), candidates.iter().map(Some));
        assert_eq!(pick("linux/amd64"), Some(0));
        assert_eq!(pick("linux/arm64"), Some(1));
        assert_eq!(pick("linux/arm/v7"), Some(3));
        assert_eq!(pick("linux/arm/v6"), Some(2));
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(pick("windows/amd64"), None);
        // A v7 host falls back to v6 when that is all there is.
        assert_eq!(best(&p("linux/arm/v7"), [Some(&p("linux/arm/v6"))].into_iter()), Some(0));
        // An entry without a platform is never picked.
        assert_eq!(best(&p("linux/amd64"), [None, Some(&p("linux/amd64"))].into_iter()), Some(1));
    }
}
