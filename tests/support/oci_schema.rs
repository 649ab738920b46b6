//! Validates OCI image-spec documents (manifest, index, config, descriptor,
//! layout header) the way upstream `schema/validator.go` does, so every
//! document kiln emits can be checked against the real draft-04 schemas
//! from `../shared/conformance/oci-image-spec/` plus the checks upstream
//! performs outside the schema (README section 13).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use jsonschema::{Draft, Retrieve, Uri, Validator};
use serde_json::Value;

/// One compiled validator per OCI media type.
pub struct OciSchemas {
    validators: HashMap<String, Validator>,
}

/// Serves the schema files from memory: the schemas `$ref` each other by
/// `https://opencontainers.org/...` URLs and sibling file names, and the
/// tests must never touch the network.
struct LocalSchemas {
    by_uri: HashMap<String, Value>,
    by_file: HashMap<String, Value>,
}

impl Retrieve for LocalSchemas {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let uri = uri.as_str();
        let no_fragment = uri.split('#').next().unwrap_or(uri);
        if let Some(doc) = self.by_uri.get(no_fragment) {
            return Ok(doc.clone());
        }
        // A relative `$ref` such as `defs.json` resolves against whatever
        // base the referring schema declared; the file name is what identifies it.
        let file = no_fragment.rsplit('/').next().unwrap_or(no_fragment);
        self.by_file
            .get(file)
            .cloned()
            .ok_or_else(|| format!("schema {uri} is not one of the local OCI schema files").into())
    }
}

impl OciSchemas {
    /// Compiles a validator for every media type in
    /// `oci-image-spec/examples/index.json` `schema_for_media_type`.
    /// Panics on unreadable or uncompilable schemas: that is a broken
    /// test environment, not a verdict.
    pub fn load(conformance_dir: &Path) -> OciSchemas {
        let spec = conformance_dir.join("oci-image-spec");
        let index: Value = read_json(&spec.join("examples/index.json"));
        let mut local = LocalSchemas {
            by_uri: HashMap::new(),
            by_file: HashMap::new(),
        };
        let schema_dir = spec.join("schema");
        let mut entries: Vec<_> = std::fs::read_dir(&schema_dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", schema_dir.display()))
            .map(|e| e.expect("schema dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let doc = read_json(&path);
            if let Some(id) = doc.get("id").and_then(Value::as_str) {
                local.by_uri.insert(id.to_string(), doc.clone());
            }
            for alias in index["schema_id_aliases"][&name]
                .as_array()
                .into_iter()
                .flatten()
            {
                let alias = alias.as_str().expect("alias is a string");
                local.by_uri.insert(alias.to_string(), doc.clone());
            }
            local.by_file.insert(name, doc);
        }
        let local = Arc::new(local);
        let mut validators = HashMap::new();
        let table = index["schema_for_media_type"]
            .as_object()
            .expect("schema_for_media_type is an object");
        for (media_type, file) in table {
            let file = file.as_str().expect("schema path is a string");
            let schema = read_json(&spec.join(file));
            let validator = jsonschema::options()
                .with_draft(Draft::Draft4)
                // Upstream asserts `format: uri`; draft-04 makes formats optional.
                .should_validate_formats(true)
                .with_retriever(SharedRetriever(Arc::clone(&local)))
                .build(&schema)
                .unwrap_or_else(|e| panic!("compiling {file} for {media_type}: {e}"));
            validators.insert(media_type.clone(), validator);
        }
        OciSchemas { validators }
    }

    /// The media types this set can validate.
    pub fn media_types(&self) -> impl Iterator<Item = &str> {
        self.validators.keys().map(String::as_str)
    }

    /// Validates `doc` as `media_type`; `Err` names the first reasons found.
    pub fn validate(&self, media_type: &str, doc: &[u8]) -> Result<(), String> {
        let validator = self
            .validators
            .get(media_type)
            .ok_or_else(|| format!("no OCI schema for media type {media_type}"))?;
        let value: Value =
            serde_json::from_slice(doc).map_err(|e| format!("not valid JSON: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if !errors.is_empty() {
            return Err(format!("schema: {}", errors.join("; ")));
        }
        beyond_schema(media_type, &value)
    }
}

/// `with_retriever` takes ownership; sharing one in-memory set between the
/// five validators avoids parsing the schema files five times.
struct SharedRetriever(Arc<LocalSchemas>);

impl Retrieve for SharedRetriever {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        self.0.retrieve(uri)
    }
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The checks upstream makes while decoding into its Go structs, which the
/// schemas do not express.
fn beyond_schema(media_type: &str, value: &Value) -> Result<(), String> {
    check_descriptors(value, "")?;
    if media_type == "application/vnd.oci.image.config.v1+json" {
        if let Some(env) = value.pointer("/config/Env") {
            // The schema already rejects a non-array; null means "unset" in Go.
            for entry in env.as_array().into_iter().flatten() {
                let entry = entry
                    .as_str()
                    .ok_or_else(|| format!("config.Env entry {entry} is not a string"))?;
                // `^[^=]+=.*$`: a non-empty name, then `=`.
                match entry.find('=') {
                    Some(at) if at > 0 => {}
                    _ => return Err(format!("config.Env entry {entry:?} is not NAME=value")),
                }
            }
        }
    }
    Ok(())
}

/// Walks the document; every object with `mediaType`, `digest` and `size`
/// is a descriptor (the document itself, config, layers, manifests, subject).
fn check_descriptors(value: &Value, path: &str) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            if map.contains_key("mediaType") && map.contains_key("size") {
                if let Some(Value::String(digest)) = map.get("digest") {
                    check_digest(digest).map_err(|e| format!("{path}/digest: {e}"))?;
                }
                if let Some(Value::String(data)) = map.get("data") {
                    check_base64(data).map_err(|e| format!("{path}/data: {e}"))?;
                }
            }
            for (key, child) in map {
                check_descriptors(child, &format!("{path}/{key}"))?;
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                check_descriptors(child, &format!("{path}/{i}"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// go-digest knows sha256 and sha512 and requires their exact lower-case
/// hex form; other algorithms are only checked by the schema pattern.
fn check_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return Err(format!("{digest:?} has no algorithm"));
    };
    let len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Ok(()),
    };
    if encoded.len() != len {
        return Err(format!("{digest:?}: {algorithm} needs {len} hex digits"));
    }
    if !encoded
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!("{digest:?} is not lower-case hex"));
    }
    Ok(())
}

/// Go decodes `[]byte` fields with standard, padded base64.
fn check_base64(data: &str) -> Result<(), String> {
    let bytes = data.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err("base64 length is not a multiple of 4 (missing padding?)".into());
    }
    let body = data.trim_end_matches('=');
    if bytes.len() - body.len() > 2 {
        return Err("too much base64 padding".into());
    }
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        return Err("not standard base64 alphabet".into());
    }
    Ok(())
}

/// The examples index (`oci-image-spec/examples/index.json`) of the conformance folder.
pub fn examples_index(conformance_dir: &Path) -> serde_json::Value {
    let path = conformance_dir.join("oci-image-spec/examples/index.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Docker v2.2 documents differ from OCI only in media type strings; upstream
/// rewrites them textually (the index's replacement table) before validating.
pub fn docker_to_oci(index: &serde_json::Value, bytes: Vec<u8>) -> Vec<u8> {
    let mut text = String::from_utf8(bytes).expect("Docker v2.2 documents are UTF-8");
    if let Some(table) = index["docker_to_oci_media_type_replacements"].as_object() {
        for (docker, oci) in table {
            text = text.replace(docker.as_str(), oci.as_str().unwrap_or(docker));
        }
    }
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_and_base64_rules() {
        assert!(check_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(check_digest(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(check_digest("sha256:abc").is_err());
        assert!(check_digest("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564").is_ok());
        assert!(check_base64("").is_ok());
        assert!(check_base64("YQ==").is_ok());
        assert!(check_base64("YQ").is_err());
        assert!(check_base64("Y===").is_err());
    }
}
