//! OCI image-spec examples against `support::oci_schema` (README section 13):
//! the schema-test vectors, the spec Markdown examples and Docker v2.2
//! samples, each with upstream's verdict.

use std::fs;

use sha2::{Digest, Sha256};

use crate::support::oci_schema::{docker_to_oci, examples_index, OciSchemas};

#[test]
fn oci_image_spec_examples() {
    let Some(dir) = super::dir() else { return };
    let spec = dir.join("oci-image-spec");
    let index = examples_index(&dir);
    let schemas = OciSchemas::load(&dir);

    let mut failures = Vec::new();
    let mut ran = 0;
    for case in index["cases"].as_array().unwrap() {
        let file = case["file"].as_str().unwrap();
        let media_type = case["media_type"].as_str().unwrap();
        let want_valid = match case["expect"].as_str().unwrap() {
            "valid" => true,
            "invalid" => false,
            other => panic!("{file}: unknown expect {other:?}"),
        };
        let raw = fs::read(spec.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));

        // Upstream pins the stored Docker samples by digest, so a re-encoded
        // copy would be caught here rather than silently validated.
        if let Some(want) = case["sha256_of_file"].as_str() {
            let got = format!("sha256:{:x}", Sha256::digest(&raw));
            if got != want {
                failures.push(format!("{file}: sha256 {got}, index says {want}"));
            }
        }

        let doc = if case["convert_before_validate"].as_bool() == Some(true) {
            docker_to_oci(&index, raw)
        } else {
            raw
        };

        let verdict = schemas.validate(media_type, &doc);
        ran += 1;
        // The index says which stage must reject each invalid document; a
        // rejection by the wrong stage means a check is missing or too eager.
        let want_stage = if case["malformed_json"].as_bool() == Some(true) {
            "not valid JSON"
        } else if case.get("needs_check_beyond_schema").is_some() {
            "beyond schema"
        } else {
            "schema:"
        };
        match (want_valid, &verdict) {
            (true, Ok(())) => {}
            (false, Err(why)) => {
                let stage_ok = match want_stage {
                    "beyond schema" => {
                        !why.starts_with("schema:") && !why.starts_with("not valid JSON")
                    }
                    prefix => why.starts_with(prefix),
                };
                if !stage_ok {
                    failures.push(format!(
                        "{file}: expected {want_stage} rejection, got: {why}"
                    ));
                }
            }
            (true, Err(why)) => failures.push(format!("{file}: expected valid, got: {why}")),
            (false, Ok(())) => failures.push(format!(
                "{file}: expected invalid ({}), but it validated",
                case["description"].as_str().unwrap_or("")
            )),
        }
    }

    for failure in &failures {
        println!("oci-image-spec FAIL: {failure}");
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} OCI image-spec cases failed",
        failures.len()
    );
    super::report("oci-image-spec/examples", ran, 0);
}

/// The checks beyond the schema, each on an otherwise valid descriptor, so a
/// regression in one of them cannot hide behind the vectors' other faults.
#[test]
fn oci_schema_checks_beyond_schema() {
    let Some(dir) = super::dir() else { return };
    let schemas = OciSchemas::load(&dir);
    let descriptor = |extra: &str, digest: &str| {
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","size":1,"digest":"{digest}"{extra}}}"#
        )
        .into_bytes()
    };
    let good = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let media = "application/vnd.oci.descriptor.v1+json";
    assert_eq!(schemas.validate(media, &descriptor("", &good)), Ok(()));
    assert!(schemas
        .validate(
            media,
            &descriptor("", &good.to_uppercase().replace("SHA", "sha"))
        )
        .is_err());
    assert!(schemas
        .validate(
            media,
            &descriptor("", &format!("sha512:{}", "ab".repeat(32)))
        )
        .is_err());
    assert_eq!(
        schemas.validate(media, &descriptor(r#","data":"YQ==""#, &good)),
        Ok(())
    );
    assert!(schemas
        .validate(media, &descriptor(r#","data":"YQ""#, &good))
        .is_err());
    // `format: uri` is asserted, not just annotated.
    assert!(schemas
        .validate(media, &descriptor(r#","urls":["not a uri"]"#, &good))
        .is_err());
    assert_eq!(
        schemas.validate(
            media,
            &descriptor(r#","urls":["https://example.com/l"]"#, &good)
        ),
        Ok(())
    );
    assert!(schemas.validate(media, br#"{"mediaType":1}"#).is_err());
    assert!(schemas.validate("application/x-unknown", b"{}").is_err());

    let config = |env: &str| {
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Env":{env}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        )
        .into_bytes()
    };
    let media = "application/vnd.oci.image.config.v1+json";
    assert_eq!(
        schemas.validate(media, &config(r#"["PATH=/bin","EMPTY="]"#)),
        Ok(())
    );
    assert!(schemas.validate(media, &config(r#"["=x"]"#)).is_err());
    assert!(schemas.validate(media, &config(r#"["NOVALUE"]"#)).is_err());
}
