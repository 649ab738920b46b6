//! Platforms as `os/arch[/variant]`, normalized the way containerd's
//! `platforms` package does for the common spellings.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {text:?}: {reason}")]
pub struct PlatformError {
    pub text: String,
    pub reason: String,
}

impl Platform {
    /// The platform this binary runs on.
    pub fn host() -> Self {
        let (arch, variant) = normalize_arch(std::env::consts::ARCH, None);
        Platform {
            os: "linux".into(),
            arch,
            variant,
        }
    }

    /// Parses `linux/amd64`, `linux/arm/v7`, `arm64` (OS defaults to linux).
    pub fn parse(text: &str) -> Result<Self, PlatformError> {
        let err = |reason: &str| PlatformError {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let lower = text.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(err("expected os/arch[/variant]"));
        }
        let (os, arch, variant) = match parts.as_slice() {
            [one] if is_known_os(one) => {
                (one.to_string(), std::env::consts::ARCH.to_string(), None)
            }
            [one] => ("linux".to_string(), one.to_string(), None),
            [os, arch] => (os.to_string(), arch.to_string(), None),
            [os, arch, variant] => (os.to_string(), arch.to_string(), Some(variant.to_string())),
            _ => return Err(err("expected os/arch[/variant]")),
        };
        if !parts.iter().all(|p| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        }) {
            return Err(err("only letters, digits, '_', '.' and '-' are allowed"));
        }
        let (arch, variant) = normalize_arch(&arch, variant.as_deref());
        Ok(Platform { os, arch, variant })
    }

    pub fn variant_str(&self) -> &str {
        self.variant.as_deref().unwrap_or("")
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn is_known_os(s: &str) -> bool {
    matches!(s, "linux" | "windows" | "darwin" | "freebsd")
}

fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let v = variant.map(str::to_string);
    match arch {
        "x86_64" | "x86-64" | "amd64" => ("amd64".into(), v.filter(|v| v != "v1")),
        "i386" | "386" | "x86" => ("386".into(), None),
        "aarch64" | "arm64" => ("arm64".into(), v.filter(|v| v != "v8")),
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => ("arm".into(), Some(v.unwrap_or_else(|| "v7".into()))),
        other => (other.to_string(), v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("linux/aarch64/v8").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(Platform::parse("arm64").unwrap().to_string(), "linux/arm64");
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        assert_eq!(Platform::host().os, "linux");
    }
}
