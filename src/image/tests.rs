use serde_json::json;

use super::media_types::*;
use super::*;
use crate::plan::platform::Platform;

fn entry(platform: serde_json::Value, tag: &str) -> serde_json::Value {
    json!({
        "mediaType": OCI_MANIFEST,
        "digest": digest_of(tag.as_bytes()).as_str(),
        "size": 1,
        "platform": platform,
        "annotations": {"tag": tag},
    })
}

fn index(entries: Vec<serde_json::Value>) -> Index {
    serde_json::from_value(json!({"schemaVersion": 2, "manifests": entries})).unwrap()
}

fn tag_of(d: Option<&Descriptor>) -> Option<&str> {
    d.and_then(|d| d.annotations.get("tag")).map(String::as_str)
}

#[test]
fn select_manifest_table() {
    let attestation = json!({
        "mediaType": OCI_MANIFEST,
        "digest": digest_of(b"att").as_str(),
        "size": 1,
        "platform": {"os": "linux", "architecture": "arm64"},
        "annotations": {"vnd.docker.reference.type": "attestation-manifest", "tag": "att"},
    });
    let idx = index(vec![
        attestation,
        entry(
            json!({"os": "unknown", "architecture": "unknown"}),
            "unknown",
        ),
        entry(json!({"os": "linux", "architecture": "amd64"}), "amd64"),
        entry(
            json!({"os": "linux", "architecture": "arm", "variant": "v6"}),
            "armv6",
        ),
        entry(
            json!({"os": "linux", "architecture": "arm", "variant": "v7"}),
            "armv7",
        ),
        entry(
            json!({"os": "linux", "architecture": "arm64", "variant": "v8"}),
            "arm64v8",
        ),
        entry(
            json!({"os": "linux", "architecture": "riscv64", "variant": "rva22"}),
            "rv",
        ),
        entry(json!({"os": "linux", "architecture": "riscv64"}), "rvnone"),
    ]);
    let only_v6 = index(vec![entry(
        json!({"os": "linux", "architecture": "arm", "variant": "v6"}),
        "armv6",
    )]);
    let only_v7 = index(vec![entry(
        json!({"os": "linux", "architecture": "arm", "variant": "v7"}),
        "armv7",
    )]);
    let only_att = index(vec![entry(
        json!({"os": "unknown", "architecture": "unknown"}),
        "unknown",
    )]);
    let cases: &[(&Index, &str, Option<&str>)] = &[
        (&idx, "linux/amd64", Some("amd64")),
        (&idx, "linux/amd64/v1", Some("amd64")),
        (&idx, "linux/arm/v7", Some("armv7")),
        (&idx, "linux/arm/v6", Some("armv6")),
        (&idx, "linux/arm64", Some("arm64v8")),
        (&idx, "linux/arm64/v8", Some("arm64v8")),
        (&idx, "linux/riscv64", Some("rvnone")),
        (&idx, "linux/riscv64/rva22", Some("rv")),
        (&idx, "linux/riscv64/rva23", None),
        (&idx, "linux/s390x", None),
        (&idx, "windows/amd64", None),
        (&only_v6, "linux/arm/v7", Some("armv6")),
        (&only_v7, "linux/arm/v6", None),
        (&only_att, "linux/amd64", None),
    ];
    for (idx, want, expect) in cases {
        let p = Platform::parse(want).unwrap();
        assert_eq!(tag_of(select_manifest(idx, &p)), *expect, "want {want}");
    }
}

#[test]
fn no_variant_wanted_takes_any_variant() {
    let idx = index(vec![entry(
        json!({"os": "linux", "architecture": "riscv64", "variant": "rva22"}),
        "rv",
    )]);
    let want = Platform {
        os: "linux".into(),
        arch: "riscv64".into(),
        variant: None,
    };
    assert_eq!(tag_of(select_manifest(&idx, &want)), Some("rv"));
}

#[test]
fn attestation_only_by_annotation_is_skipped() {
    let mut att = entry(json!({"os": "linux", "architecture": "amd64"}), "att");
    att["annotations"]["vnd.docker.reference.type"] = json!("attestation-manifest");
    let idx = index(vec![att]);
    assert_eq!(
        select_manifest(&idx, &Platform::parse("linux/amd64").unwrap()),
        None
    );
}

#[test]
fn media_type_helpers() {
    assert!(is_index(OCI_INDEX) && is_index(DOCKER_MANIFEST_LIST));
    assert!(!is_index(OCI_MANIFEST));
    assert!(is_manifest(OCI_MANIFEST) && is_manifest(DOCKER_MANIFEST));
    assert!(!is_manifest(OCI_INDEX) && !is_manifest(OCI_CONFIG));
    assert!(is_config(DOCKER_CONFIG) && is_config(OCI_CONFIG));
    assert_eq!(layer_compression(OCI_LAYER_TAR), Some(Compression::None));
    assert_eq!(
        layer_compression(OCI_LAYER_TAR_GZIP),
        Some(Compression::Gzip)
    );
    assert_eq!(
        layer_compression(DOCKER_LAYER_TAR_GZIP),
        Some(Compression::Gzip)
    );
    assert_eq!(
        layer_compression(OCI_LAYER_TAR_ZSTD),
        Some(Compression::Zstd)
    );
    assert_eq!(layer_compression(OCI_CONFIG), None);
    assert_eq!(layer_compression("application/octet-stream"), None);
}

#[test]
fn config_round_trip_keeps_nulls_and_unknown_fields() {
    let src = json!({
        "architecture": "amd64",
        "os": "linux",
        "docker_version": "1.12.1",
        "config": {
            "Hostname": "abc",
            "Cmd": null,
            "Entrypoint": ["/bin/sh", "-c"],
            "Env": ["A=1"],
            "ExposedPorts": {"80/tcp": {}},
            "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30000000000_i64, "Retries": 3},
        },
        "rootfs": {"type": "layers", "diff_ids": [digest_of(b"l").as_str()]},
        "history": [{"created_by": "x", "empty_layer": true}, {"created_by": "y"}],
    });
    let bytes = serde_json::to_vec(&src).unwrap();
    let cfg: ImageConfig = parse(OCI_CONFIG, &bytes).unwrap();
    let c = cfg.config.as_ref().unwrap();
    assert_eq!(c.cmd, Some(None));
    assert_eq!(
        c.entrypoint,
        Some(Some(vec!["/bin/sh".into(), "-c".into()]))
    );
    assert_eq!(c.extra["Hostname"], "abc");
    assert!(cfg.history[0].empty_layer && !cfg.history[1].empty_layer);
    let out: serde_json::Value = serde_json::from_slice(&to_canonical_json(&cfg).unwrap()).unwrap();
    assert_eq!(out, src);
}

#[test]
fn canonical_json_is_sorted_and_compact() {
    let m = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: OCI_CONFIG.into(),
            digest: digest_of(b"{}"),
            size: 2,
            annotations: Default::default(),
            platform: None,
        },
        layers: vec![],
        annotations: Default::default(),
        extra: Default::default(),
    };
    let text = String::from_utf8(to_canonical_json(&m).unwrap()).unwrap();
    assert!(!text.contains(' ') && !text.contains('\n'));
    let config_at = text.find("\"config\"").unwrap();
    let schema_at = text.find("\"schemaVersion\"").unwrap();
    let layers_at = text.find("\"layers\"").unwrap();
    assert!(config_at < layers_at && layers_at < schema_at, "{text}");
    assert_eq!(to_canonical_json(&m).unwrap(), text.as_bytes());
    let back: Manifest = parse(OCI_MANIFEST, text.as_bytes()).unwrap();
    assert_eq!(back, m);
}

#[test]
fn parse_error_names_media_type() {
    let err = parse::<Index>(OCI_INDEX, b"{\"schemaVersion\":\"two\"}").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(OCI_INDEX) && msg.contains("invalid type"),
        "{msg}"
    );
}
