//! Picking the manifest for one platform out of an index.

use crate::plan::platform::Platform;
use crate::store::Descriptor;

use super::Index;

/// BuildKit marks provenance/SBOM manifests in an index with this annotation.
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
const ATTESTATION: &str = "attestation-manifest";

/// ARM variants a CPU of the given variant can also run, best first. Newer
/// 32-bit ARM cores execute older ISA levels, so v7 falls back to v6 then v5
/// (containerd's matcher does the same); never the other way round.
fn arm_fallbacks(variant: &str) -> &'static [&'static str] {
    match variant {
        "v8" => &["v8", "v7", "v6", "v5"],
        "v7" => &["v7", "v6", "v5"],
        "v6" => &["v6", "v5"],
        "v5" => &["v5"],
        _ => &[],
    }
}

/// The descriptor in `index` for `want`, or `None`.
///
/// Platforms are compared after `Platform::parse` normalization, so
/// `arm64/v8` equals `arm64` and `amd64/v1` equals `amd64`. An exact
/// os/arch/variant match wins; with no wanted variant any variant of the arch
/// is accepted, preferring none; 32-bit ARM falls back to older variants.
/// Attestation manifests are never images and are skipped.
pub fn select_manifest<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    let want =
        normalize(&want.os, &want.arch, want.variant.as_deref()).unwrap_or_else(|| want.clone());
    let candidates: Vec<(&Descriptor, Platform)> = index
        .manifests
        .iter()
        .filter(|d| !is_attestation(d))
        .filter_map(|d| descriptor_platform(d).map(|p| (d, p)))
        .filter(|(_, p)| p.os == want.os && p.arch == want.arch)
        .collect();

    if let Some((d, _)) = candidates.iter().find(|(_, p)| p.variant == want.variant) {
        return Some(d);
    }
    match want.variant.as_deref() {
        // Exact "no variant" was tried above; take the first variant listed.
        None => candidates.first().map(|(d, _)| *d),
        Some(v) if want.arch == "arm" => arm_fallbacks(v).iter().find_map(|fallback| {
            candidates
                .iter()
                .find(|(_, p)| p.variant.as_deref() == Some(fallback))
                .map(|(d, _)| *d)
        }),
        Some(_) => None,
    }
}

fn is_attestation(d: &Descriptor) -> bool {
    d.annotations.get(REFERENCE_TYPE).map(String::as_str) == Some(ATTESTATION)
}

/// The normalized platform of an index entry; `None` if it has none, it is
/// `unknown/unknown` (BuildKit's placeholder for attestations), or it does not parse.
fn descriptor_platform(d: &Descriptor) -> Option<Platform> {
    let p = d.platform.as_ref()?;
    let os = p.get("os")?.as_str()?;
    let arch = p.get("architecture")?.as_str()?;
    if os == "unknown" || arch == "unknown" {
        return None;
    }
    normalize(os, arch, p.get("variant").and_then(|v| v.as_str()))
}

/// Runs the text form through `Platform::parse` so both sides get the same
/// normalization rules as the CLI's `--platform`.
fn normalize(os: &str, arch: &str, variant: Option<&str>) -> Option<Platform> {
    let text = match variant {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    };
    Platform::parse(&text).ok()
}
