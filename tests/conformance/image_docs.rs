//! `kiln::image` against the OCI image-spec examples (README section 13):
//! every valid manifest, index and config parses into kiln's types,
//! re-serializes with `to_canonical_json` and still passes the schema.
//! Documents kiln builds from scratch must pass too.

use std::fs;

use serde_json::{json, Map, Value};

use kiln::image::{
    self, media_types, ContainerConfig, Descriptor, History, ImageConfig, Index, Manifest, RootFs,
};

use crate::support::oci_schema::{docker_to_oci, examples_index, OciSchemas};

/// Descriptor fields `kiln::store::Descriptor` models; others (`urls`,
/// `data`, `artifactType`) are dropped on a round trip by design for now.
const DESCRIPTOR_KEYS: &[&str] = &["mediaType", "digest", "size", "annotations", "platform"];
/// Nullable config keys kiln reads as absent; Cmd/Entrypoint keep `null`.
const NULL_AS_ABSENT: &[&str] = &[
    "User",
    "ExposedPorts",
    "Env",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

#[test]
fn image_docs_round_trip() {
    let Some(dir) = super::dir() else { return };
    let spec = dir.join("oci-image-spec");
    let index = examples_index(&dir);
    let schemas = OciSchemas::load(&dir);
    let to_oci = |bytes: Vec<u8>| docker_to_oci(&index, bytes);

    let (mut ran, mut skipped) = (0, 0);
    let mut failures = Vec::new();
    for case in index["cases"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let media_type = case["media_type"].as_str().unwrap();
        let typed = media_types::is_manifest(media_type)
            || media_types::is_index(media_type)
            || media_types::is_config(media_type);
        if case["expect"] != "valid" || !typed {
            skipped += 1;
            continue;
        }
        let raw = fs::read(spec.join(file)).unwrap();
        let original: Value = serde_json::from_slice(&raw).unwrap();
        let result = round_trip(media_type, &raw).and_then(|out| {
            let reparsed: Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
            let expected = expected_after_round_trip(media_type, original.clone());
            if reparsed != expected {
                return Err(format!(
                    "changed on round trip:\n{reparsed}\nwant\n{expected}"
                ));
            }
            let out = if case["convert_before_validate"] == true {
                to_oci(out)
            } else {
                out
            };
            schemas.validate(media_type, &out)
        });
        match result {
            Ok(()) => ran += 1,
            Err(e) => failures.push(format!("{file}: {e}")),
        }
    }

    let fresh = fresh_documents();
    for (media_type, bytes) in &fresh {
        match schemas.validate(media_type, bytes) {
            Ok(()) => ran += 1,
            Err(e) => failures.push(format!("fresh {media_type}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    super::report("image/round-trip", ran, skipped);
}

fn round_trip(media_type: &str, raw: &[u8]) -> Result<Vec<u8>, String> {
    let out = if media_types::is_manifest(media_type) {
        image::to_canonical_json(&image::parse::<Manifest>(media_type, raw).map_err(s)?)
    } else if media_types::is_index(media_type) {
        image::to_canonical_json(&image::parse::<Index>(media_type, raw).map_err(s)?)
    } else {
        image::to_canonical_json(&image::parse::<ImageConfig>(media_type, raw).map_err(s)?)
    };
    out.map_err(s)
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// What a lossless round trip should give, minus the documented losses.
fn expected_after_round_trip(media_type: &str, mut doc: Value) -> Value {
    if media_types::is_config(media_type) {
        if let Some(config) = doc.get_mut("config").and_then(Value::as_object_mut) {
            config.retain(|k, v| !(v.is_null() && NULL_AS_ABSENT.contains(&k.as_str())));
        }
        return doc;
    }
    let lists: &[&str] = if media_types::is_index(media_type) {
        &["manifests"]
    } else {
        &["layers"]
    };
    for key in lists {
        for d in doc[*key].as_array_mut().into_iter().flatten() {
            trim_descriptor(d);
        }
    }
    if media_types::is_manifest(media_type) {
        trim_descriptor(&mut doc["config"]);
    }
    doc
}

fn trim_descriptor(d: &mut Value) {
    if let Some(obj) = d.as_object_mut() {
        obj.retain(|k, v| {
            DESCRIPTOR_KEYS.contains(&k.as_str())
                && !(k == "annotations" && v.as_object().is_some_and(Map::is_empty))
        });
    }
}

/// A config and a manifest pointing at it, built with the types the way the
/// builder will, serialized canonically.
fn fresh_documents() -> Vec<(&'static str, Vec<u8>)> {
    let layer = image::digest_of(b"layer");
    let config = ImageConfig {
        created: Some("2024-01-01T00:00:00Z".into()),
        architecture: "arm".into(),
        os: "linux".into(),
        variant: Some("v7".into()),
        config: Some(ContainerConfig {
            env: Some(vec!["PATH=/usr/bin:/bin".into()]),
            cmd: Some(None),
            entrypoint: Some(Some(vec!["/bin/sh".into()])),
            exposed_ports: Some([("80/tcp".to_string(), Map::new())].into()),
            working_dir: Some("/app".into()),
            ..Default::default()
        }),
        rootfs: RootFs {
            diff_ids: vec![layer.clone()],
            ..Default::default()
        },
        history: vec![
            History {
                created_by: Some("COPY . /app".into()),
                ..Default::default()
            },
            History {
                created_by: Some("CMD []".into()),
                empty_layer: true,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let config_bytes = image::to_canonical_json(&config).unwrap();
    let descriptor = |media_type: &str, bytes: &[u8]| Descriptor {
        media_type: media_type.into(),
        digest: image::digest_of(bytes),
        size: bytes.len() as u64,
        annotations: Default::default(),
        platform: None,
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_types::OCI_MANIFEST.into()),
        config: descriptor(media_types::OCI_CONFIG, &config_bytes),
        layers: vec![descriptor(media_types::OCI_LAYER_TAR_GZIP, b"layer")],
        annotations: Default::default(),
        extra: Default::default(),
    };
    let manifest_bytes = image::to_canonical_json(&manifest).unwrap();
    let mut entry = descriptor(media_types::OCI_MANIFEST, &manifest_bytes);
    entry.platform = Some(json!({"os": "linux", "architecture": "arm", "variant": "v7"}));
    let index = Index {
        schema_version: 2,
        media_type: Some(media_types::OCI_INDEX.into()),
        manifests: vec![entry],
        annotations: Default::default(),
        extra: Default::default(),
    };
    vec![
        (media_types::OCI_CONFIG, config_bytes),
        (media_types::OCI_MANIFEST, manifest_bytes),
        (
            media_types::OCI_INDEX,
            image::to_canonical_json(&index).unwrap(),
        ),
    ]
}
