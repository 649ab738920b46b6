//! Variables in scope for expansion, and the ARGs that exist without being declared.

use crate::frontend::shell::Env;

use super::platform::Platform;

/// An ordered variable list where a later `set` of a name replaces its value in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars(Vec<(String, String)>);

impl Vars {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut v = Vars::new();
        for (k, val) in pairs {
            v.set(&k, &val);
        }
        v
    }

    pub fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.0.push((key.to_string(), value.to_string())),
        }
    }

    pub fn lookup(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

impl Env for Vars {
    fn get(&self, name: &str) -> Option<&str> {
        self.lookup(name)
    }
}

/// Proxy ARGs: usable as build args without an ARG line, kept out of history.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// BuildKit's built-in build args; passing them never counts as "unused".
pub const BUILTIN_ARGS: [&str; 8] = [
    "BUILDKIT_BUILD_NAME",
    "BUILDKIT_CACHE_MOUNT_NS",
    "BUILDKIT_CONTEXT_KEEP_GIT_DIR",
    "BUILDKIT_INLINE_CACHE",
    "BUILDKIT_MULTI_PLATFORM",
    "BUILDKIT_SANDBOX_HOSTNAME",
    "BUILDKIT_SYNTAX",
    "SOURCE_DATE_EPOCH",
];

/// The automatic platform ARGs of the global scope.
pub fn platform_args(target: &Platform, build: &Platform) -> Vars {
    let mut v = Vars::new();
    v.set("TARGETPLATFORM", &target.to_string());
    v.set("TARGETOS", &target.os);
    v.set("TARGETARCH", &target.arch);
    v.set("TARGETVARIANT", target.variant_str());
    v.set("BUILDPLATFORM", &build.to_string());
    v.set("BUILDOS", &build.os);
    v.set("BUILDARCH", &build.arch);
    v.set("BUILDVARIANT", build.variant_str());
    v
}

pub fn is_predefined(name: &str) -> bool {
    PROXY_ARGS.contains(&name) || BUILTIN_ARGS.contains(&name)
}
