//! Variables in scope for expansion, and the ARGs that exist without being declared.

use crate::frontend::shell::EnvList;

use super::platform::Platform;

/// Variables in scope: BuildKit's env-list semantics (a later `set` of a name
/// replaces its value in place).
pub type Vars = EnvList;

/// The pairs of a variable list, in order.
pub fn pairs(v: &Vars) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A variable list from pairs (later duplicates win).
pub fn from_pairs(list: &[(String, String)]) -> Vars {
    let mut v = Vars::default();
    for (k, val) in list {
        v.set(k, val);
    }
    v
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
    let mut v = Vars::default();
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
