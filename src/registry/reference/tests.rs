use super::*;

const D256: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Longest valid tag.
const TAG_128: &str = "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt";

fn d512() -> String {
    format!("sha512:{}", "ab".repeat(64))
}

/// (input, registry, repository, tag, digest)
type ValidCase = (
    String,
    &'static str,
    String,
    Option<&'static str>,
    Option<String>,
);

fn valid_cases() -> Vec<ValidCase> {
    let d = || Some(D256.to_string());
    let deep = "a/b/c/d/e/f".to_string();
    vec![
        (
            "busybox".into(),
            "docker.io",
            "library/busybox".into(),
            Some("latest"),
            None,
        ),
        (
            "busybox:1.36".into(),
            "docker.io",
            "library/busybox".into(),
            Some("1.36"),
            None,
        ),
        (
            "library/busybox".into(),
            "docker.io",
            "library/busybox".into(),
            Some("latest"),
            None,
        ),
        (
            "user/repo".into(),
            "docker.io",
            "user/repo".into(),
            Some("latest"),
            None,
        ),
        (
            "user/repo:v1".into(),
            "docker.io",
            "user/repo".into(),
            Some("v1"),
            None,
        ),
        (
            "docker.io/busybox".into(),
            "docker.io",
            "library/busybox".into(),
            Some("latest"),
            None,
        ),
        (
            "docker.io/user/repo".into(),
            "docker.io",
            "user/repo".into(),
            Some("latest"),
            None,
        ),
        (
            "index.docker.io/busybox".into(),
            "docker.io",
            "library/busybox".into(),
            Some("latest"),
            None,
        ),
        (
            "index.docker.io/u/r:t".into(),
            "docker.io",
            "u/r".into(),
            Some("t"),
            None,
        ),
        (
            "localhost/x".into(),
            "localhost",
            "x".into(),
            Some("latest"),
            None,
        ),
        (
            "localhost:5000/x".into(),
            "localhost:5000",
            "x".into(),
            Some("latest"),
            None,
        ),
        (
            "localhost:5000/x:dev".into(),
            "localhost:5000",
            "x".into(),
            Some("dev"),
            None,
        ),
        (
            "127.0.0.1:5000/a/b:c".into(),
            "127.0.0.1:5000",
            "a/b".into(),
            Some("c"),
            None,
        ),
        (
            "[::1]:5000/a".into(),
            "[::1]:5000",
            "a".into(),
            Some("latest"),
            None,
        ),
        ("[::1]/a:t".into(), "[::1]", "a".into(), Some("t"), None),
        (
            format!("ghcr.io/o/r@{D256}"),
            "ghcr.io",
            "o/r".into(),
            None,
            d(),
        ),
        (
            format!("name:tag@{D256}"),
            "docker.io",
            "library/name".into(),
            Some("tag"),
            d(),
        ),
        (
            format!("busybox@{D256}"),
            "docker.io",
            "library/busybox".into(),
            None,
            d(),
        ),
        (
            format!("a@{}", d512()),
            "docker.io",
            "library/a".into(),
            None,
            Some(d512()),
        ),
        (
            format!("ghcr.io/{deep}:x"),
            "ghcr.io",
            deep.clone(),
            Some("x"),
            None,
        ),
        (
            "a__b".into(),
            "docker.io",
            "library/a__b".into(),
            Some("latest"),
            None,
        ),
        (
            "a---b".into(),
            "docker.io",
            "library/a---b".into(),
            Some("latest"),
            None,
        ),
        (
            "ab_c-d/e.f".into(),
            "docker.io",
            "ab_c-d/e.f".into(),
            Some("latest"),
            None,
        ),
        (
            "my-registry.example.com:443/team/app:1.0-rc_1".into(),
            "my-registry.example.com:443",
            "team/app".into(),
            Some("1.0-rc_1"),
            None,
        ),
        (
            "foo/bar:UPPER_tag".into(),
            "docker.io",
            "foo/bar".into(),
            Some("UPPER_tag"),
            None,
        ),
        (
            "localhost:5000".into(),
            "docker.io",
            "library/localhost".into(),
            Some("5000"),
            None,
        ),
        (
            "x:_t".into(),
            "docker.io",
            "library/x".into(),
            Some("_t"),
            None,
        ),
        (
            format!("x:{}", "t".repeat(128)),
            "docker.io",
            "library/x".into(),
            Some(TAG_128),
            None,
        ),
        (
            format!("ghcr.io/{}", "a".repeat(255)),
            "ghcr.io",
            "a".repeat(255),
            Some("latest"),
            None,
        ),
        (
            "0/1".into(),
            "docker.io",
            "0/1".into(),
            Some("latest"),
            None,
        ),
    ]
}

#[test]
fn valid_normalizations() {
    for (input, registry, repository, tag, digest) in valid_cases() {
        let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(r.registry(), registry, "{input}");
        assert_eq!(r.repository(), repository, "{input}");
        assert_eq!(r.tag(), tag, "{input}");
        assert_eq!(r.digest(), digest.as_deref(), "{input}");
        // Both printed forms must parse back to the same reference.
        assert_eq!(Reference::parse(&r.to_string()).as_ref(), Ok(&r), "{input}");
        assert_eq!(Reference::parse(&r.familiar()).as_ref(), Ok(&r), "{input}");
        assert_eq!(input.parse::<Reference>().as_ref(), Ok(&r), "{input}");
    }
}

fn kind(e: &ReferenceError) -> &'static str {
    match e {
        ReferenceError::Empty { .. } => "empty",
        ReferenceError::Uppercase { .. } => "upper",
        ReferenceError::TooLong { .. } => "long",
        ReferenceError::InvalidRegistry { .. } => "registry",
        ReferenceError::InvalidComponent { .. } => "component",
        ReferenceError::InvalidTag { .. } => "tag",
        ReferenceError::InvalidDigest { .. } => "digest",
    }
}

#[test]
fn invalid_references() {
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "empty"),
        ("Busybox".into(), "upper"),
        ("user/Repo".into(), "upper"),
        ("a:".into(), "tag"),
        (":tag".into(), "empty"),
        ("a::b".into(), "component"),
        ("a@sha256:short".into(), "digest"),
        (format!("a@sha256:{}", "A".repeat(64)), "digest"),
        (format!("a@sha256:{}0", "a".repeat(64)), "digest"),
        (format!("a@md5:{}", "a".repeat(32)), "digest"),
        (format!("a@sha512:{}", "a".repeat(64)), "digest"),
        ("a@".into(), "digest"),
        ("a@latest".into(), "digest"),
        ("-a".into(), "component"),
        ("a-".into(), "component"),
        ("a..b".into(), "component"),
        ("a___b".into(), "component"),
        ("a._b".into(), "component"),
        ("_a".into(), "component"),
        ("a//b".into(), "component"),
        ("a/".into(), "component"),
        ("/a".into(), "component"),
        ("ghcr.io/".into(), "component"),
        ("a".repeat(256), "long"),
        (format!("ghcr.io/{}", "a".repeat(256)), "long"),
        (format!("a:{}", "t".repeat(129)), "tag"),
        ("a:.t".into(), "tag"),
        ("a:-t".into(), "tag"),
        ("bus box".into(), "component"),
        (" busybox".into(), "component"),
        ("busybox ".into(), "component"),
        ("a:t t".into(), "tag"),
        ("a:b/c".into(), "registry"),
        ("localhost:/x".into(), "registry"),
        ("localhost:50a/x".into(), "registry"),
        ("-bad.io/x".into(), "registry"),
        ("bad..io/x".into(), "registry"),
        ("[::1/x".into(), "registry"),
        ("[zz]:5000/x".into(), "registry"),
        ("[::1]x/a".into(), "registry"),
        ("bÜsybox".into(), "component"),
        ("a@b@c".into(), "digest"),
    ];
    for (input, want) in cases {
        match Reference::parse(&input) {
            Ok(r) => panic!("{input:?} parsed as {r}"),
            Err(e) => assert_eq!(kind(&e), want, "{input:?}: {e}"),
        }
    }
}

#[test]
fn error_messages_name_input_and_problem() {
    let msg = |s: &str| Reference::parse(s).err().map(|e| e.to_string());
    assert_eq!(
        msg("Busybox").as_deref(),
        Some("invalid reference \"Busybox\": repository name must be lowercase")
    );
    assert_eq!(msg("").as_deref(), Some("invalid reference \"\": empty"));
    assert_eq!(
        msg("a@sha256:short").as_deref(),
        Some("invalid reference \"a@sha256:short\": invalid digest: expected sha256:<64 hex>")
    );
    assert!(msg("a:").is_some_and(|m| m.contains("\"a:\"") && m.contains("invalid tag")));
    assert!(msg(&"a".repeat(256)).is_some_and(|m| m.ends_with("too long (name > 255 chars)")));
}

#[test]
fn display_and_familiar_forms() {
    let cases = [
        (
            "busybox",
            "docker.io/library/busybox:latest",
            "busybox:latest",
        ),
        (
            "library/busybox:1",
            "docker.io/library/busybox:1",
            "busybox:1",
        ),
        ("user/app:1", "docker.io/user/app:1", "user/app:1"),
        (
            "library/a/b",
            "docker.io/library/a/b:latest",
            "library/a/b:latest",
        ),
        (
            "127.0.0.1:5000/a:b",
            "127.0.0.1:5000/a:b",
            "127.0.0.1:5000/a:b",
        ),
        ("ghcr.io/o/r", "ghcr.io/o/r:latest", "ghcr.io/o/r:latest"),
    ];
    for (input, full, short) in cases {
        let r = Reference::parse(input).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.to_string(), full, "{input}");
        assert_eq!(r.familiar(), short, "{input}");
    }
    let r = Reference::parse(&format!("name:tag@{D256}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.to_string(), format!("docker.io/library/name:tag@{D256}"));
    assert_eq!(r.familiar(), format!("name:tag@{D256}"));
    let r = Reference::parse(&format!("ghcr.io/o/r@{D256}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.to_string(), format!("ghcr.io/o/r@{D256}"));
}

#[test]
fn with_tag_replaces_tag_and_keeps_digest() {
    let r = Reference::parse("busybox").unwrap_or_else(|e| panic!("{e}"));
    let t = r.with_tag("1.36").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.to_string(), "docker.io/library/busybox:1.36");
    assert_eq!(r.tag(), Some("latest"), "original untouched");
    let pinned = Reference::parse(&format!("ghcr.io/o/r@{D256}")).unwrap_or_else(|e| panic!("{e}"));
    let both = pinned.with_tag("v2").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(both.to_string(), format!("ghcr.io/o/r:v2@{D256}"));
    for bad in ["", ".x", "a b", &"t".repeat(129)] {
        assert!(
            matches!(r.with_tag(bad), Err(ReferenceError::InvalidTag { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn loopback_and_api_host() {
    let cases = [
        ("busybox", false, "registry-1.docker.io"),
        ("index.docker.io/u/r", false, "registry-1.docker.io"),
        ("localhost/x", true, "localhost"),
        ("localhost:5000/x", true, "localhost:5000"),
        ("127.0.0.1:5000/a", true, "127.0.0.1:5000"),
        ("127.8.9.10/a", true, "127.8.9.10"),
        ("[::1]:5000/a", true, "[::1]:5000"),
        ("[::1]/a", true, "[::1]"),
        ("[::2]:5000/a", false, "[::2]:5000"),
        ("128.0.0.1:5000/a", false, "128.0.0.1:5000"),
        ("localhost.example.com/a", false, "localhost.example.com"),
        ("ghcr.io/o/r", false, "ghcr.io"),
    ];
    for (input, loopback, api) in cases {
        let r = Reference::parse(input).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.is_loopback(), loopback, "{input}");
        assert_eq!(r.api_host(), api, "{input}");
    }
}

#[test]
fn never_panics_on_odd_input() {
    // Multi-byte characters next to the separators exercise the slicing.
    for s in [
        "é:é",
        "é/é",
        "/:",
        "@",
        ":@",
        "[",
        "[]",
        "[]/a",
        "é@é",
        "a/é:",
        ":",
        "/",
        "::",
        "a:b:c/d",
        "ü.io:ü/x",
        "\0",
        "a\n",
    ] {
        let _ = Reference::parse(s);
    }
}
