use super::*;
use std::sync::Mutex;

/// Serializes tests that write and exec helper scripts: a fork from another
/// test thread can inherit the script's write fd and cause ETXTBSY.
static HELPER_LOCK: Mutex<()> = Mutex::new(());

fn env(auth: Option<&str>, docker: Option<&str>, home: Option<&str>) -> AuthEnv {
    AuthEnv {
        registry_auth_file: auth.map(PathBuf::from),
        docker_config: docker.map(PathBuf::from),
        home: home.map(PathBuf::from),
        path: None,
    }
}

fn cred(u: &str, s: &str) -> Credential {
    Credential {
        username: u.into(),
        secret: s.into(),
    }
}

#[test]
fn locate_precedence() {
    let all = env(Some("/a/auth.json"), Some("/d"), Some("/h"));
    assert_eq!(AuthConfig::locate(&all), PathBuf::from("/a/auth.json"));
    let no_auth = env(None, Some("/d"), Some("/h"));
    assert_eq!(
        AuthConfig::locate(&no_auth),
        PathBuf::from("/d/config.json")
    );
    let home = env(None, None, Some("/h"));
    assert_eq!(
        AuthConfig::locate(&home),
        PathBuf::from("/h/.docker/config.json")
    );
}

#[test]
fn load_docker_style_auths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let b = |s: &str| b64_encode(s.as_bytes());
    let doc = serde_json::json!({
        "auths": {
            "https://index.docker.io/v1/": {"auth": b("hubuser:hubpass")},
            "127.0.0.1:5000": {"auth": b("local:pw:with:colons")},
            "https://ghcr.io/v2/": {"auth": b("gh:tok")},
            "quay.io": {"username": "q", "password": "qp"},
            "acr.example": {"identitytoken": "refresh-xyz"},
            "empty.example": {},
            "bad.example": {"auth": "!!!"}
        }
    });
    fs::write(&path, doc.to_string()).unwrap();
    let c = AuthConfig::load(&path).unwrap();
    assert_eq!(
        c.get("docker.io").unwrap(),
        Some(cred("hubuser", "hubpass"))
    );
    assert_eq!(
        c.get("127.0.0.1:5000").unwrap(),
        Some(cred("local", "pw:with:colons"))
    );
    assert_eq!(c.get("ghcr.io").unwrap(), Some(cred("gh", "tok")));
    assert_eq!(c.get("quay.io").unwrap(), Some(cred("q", "qp")));
    let tok = c.get("acr.example").unwrap().unwrap();
    assert!(tok.is_identity_token());
    assert_eq!(tok.secret, "refresh-xyz");
    assert_eq!(c.get("empty.example").unwrap(), None);
    assert_eq!(c.get("nowhere.example").unwrap(), None);
    let err = c.get("bad.example").unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("bad.example"),
        "{err}"
    );

    let r = Reference::parse("busybox").unwrap();
    assert_eq!(c.get_for(&r).unwrap(), Some(cred("hubuser", "hubpass")));
}

#[test]
fn load_missing_is_empty_and_bad_json_names_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = AuthConfig::load(&dir.path().join("nope.json")).unwrap();
    assert_eq!(c.get("docker.io").unwrap(), None);
    let bad = dir.path().join("bad.json");
    fs::write(&bad, "{not json").unwrap();
    let err = AuthConfig::load(&bad).unwrap_err().to_string();
    assert!(
        err.starts_with("parse credentials ") && err.contains("bad.json"),
        "{err}"
    );
}

#[test]
fn store_save_load_round_trip_keeps_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("config.json");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(
        &path,
        r#"{"psFormat":"table","auths":{"https://127.0.0.1:5000/v2/":{"auth":"b2xkOm9sZA=="}}}"#,
    )
    .unwrap();
    let mut c = AuthConfig::load(&path).unwrap();
    c.store("127.0.0.1:5000", &cred("alice", "s3cret")).unwrap();
    c.store("docker.io", &cred("hub", "hp")).unwrap();
    c.store("acr.example", &Credential::identity_token("rt"))
        .unwrap();
    c.save().unwrap();

    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let raw: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(raw["psFormat"], "table");
    // The stale URL-form key is replaced, not left alongside the new one.
    let auths = raw["auths"].as_object().unwrap();
    assert!(!auths.contains_key("https://127.0.0.1:5000/v2/"));
    assert_eq!(auths["127.0.0.1:5000"]["auth"], "YWxpY2U6czNjcmV0");
    assert!(auths.contains_key("https://index.docker.io/v1/"));

    let c = AuthConfig::load(&path).unwrap();
    assert_eq!(
        c.get("127.0.0.1:5000").unwrap(),
        Some(cred("alice", "s3cret"))
    );
    assert_eq!(c.get("docker.io").unwrap(), Some(cred("hub", "hp")));
    assert!(c.get("acr.example").unwrap().unwrap().is_identity_token());
    // No temp files left behind.
    assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
}

#[test]
fn save_creates_parent_dir_0700() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new").join("config.json");
    let mut c = AuthConfig::load(&path).unwrap();
    c.store("r.example", &cred("u", "p")).unwrap();
    c.save().unwrap();
    let mode = fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn erase_removes_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let mut c = AuthConfig::load(&path).unwrap();
    c.store("docker.io", &cred("u", "p")).unwrap();
    c.store("keep.example", &cred("k", "kp")).unwrap();
    assert!(c.erase("docker.io").unwrap());
    assert!(!c.erase("docker.io").unwrap());
    c.save().unwrap();
    let c = AuthConfig::load(&path).unwrap();
    assert_eq!(c.get("docker.io").unwrap(), None);
    assert_eq!(c.get("keep.example").unwrap(), Some(cred("k", "kp")));
}

const HELPER: &str = r#"#!/bin/sh
log="$(dirname "$0")/helper.log"
case "$1" in
get)
    read -r server
    if [ "$server" = "reg.example:5000" ] || [ "$server" = "https://index.docker.io/v1/" ]; then
        printf '{"ServerURL":"%s","Username":"alice","Secret":"s3cret"}\n' "$server"
    else
        echo "credentials not found in native keychain"
        exit 1
    fi ;;
store)
    printf 'store ' >> "$log"; cat >> "$log"; echo >> "$log" ;;
erase)
    read -r server
    if [ "$server" = "reg.example:5000" ]; then
        echo "erase $server" >> "$log"
    else
        echo "credentials not found in native keychain"
        exit 1
    fi ;;
esac
"#;

fn write_script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    fs::write(&p, body).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
}

fn helper_config(dir: &Path, doc: Value) -> AuthConfig {
    let path = dir.join("config.json");
    fs::write(&path, doc.to_string()).unwrap();
    AuthConfig::load(&path)
        .unwrap()
        .with_search_path(Some(dir.as_os_str().to_owned()))
}

fn check_helper_round_trip(doc: Value) {
    let _guard = HELPER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    write_script(dir.path(), "docker-credential-test", HELPER);
    let mut c = helper_config(dir.path(), doc);

    assert_eq!(
        c.get("reg.example:5000").unwrap(),
        Some(cred("alice", "s3cret"))
    );
    assert_eq!(c.get("docker.io").unwrap(), Some(cred("alice", "s3cret")));
    assert_eq!(c.get("unknown.example").unwrap(), None);

    c.store("reg.example:5000", &cred("bob", "pw")).unwrap();
    assert!(c.erase("reg.example:5000").unwrap());
    assert!(!c.erase("unknown.example").unwrap());
    let log = fs::read_to_string(dir.path().join("helper.log")).unwrap();
    let mut lines = log.lines();
    let stored: Value =
        serde_json::from_str(lines.next().unwrap().strip_prefix("store ").unwrap()).unwrap();
    assert_eq!(
        stored,
        serde_json::json!({"ServerURL":"reg.example:5000","Username":"bob","Secret":"pw"})
    );
    assert_eq!(lines.next(), Some("erase reg.example:5000"));
    assert_eq!(lines.next(), None);
    // Nothing went into the file in plain text.
    c.save().unwrap();
    let raw = fs::read_to_string(c.path()).unwrap();
    assert!(!raw.contains("auth\""), "{raw}");
}

#[test]
fn helper_via_cred_helpers() {
    check_helper_round_trip(serde_json::json!({
        "credHelpers": {
            "reg.example:5000": "test",
            "docker.io": "test",
            "unknown.example": "test"
        },
        // A stale inline entry must be shadowed by the helper.
        "auths": {"reg.example:5000": {"auth": "b2xkOm9sZA=="}}
    }));
}

#[test]
fn helper_via_creds_store() {
    check_helper_round_trip(serde_json::json!({"credsStore": "test"}));
}

#[test]
fn failing_helper_error_names_helper_and_registry() {
    let _guard = HELPER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    write_script(
        dir.path(),
        "docker-credential-pass",
        "#!/bin/sh\necho 'gpg: decryption failed' >&2\nexit 1\n",
    );
    let c = helper_config(
        dir.path(),
        serde_json::json!({"credHelpers": {"127.0.0.1:5000": "pass"}}),
    );
    let err = c.get("127.0.0.1:5000").unwrap_err().to_string();
    assert_eq!(
        err,
        "credential helper docker-credential-pass get for 127.0.0.1:5000 failed: \
         exit status 1: gpg: decryption failed"
    );

    let missing = helper_config(dir.path(), serde_json::json!({"credsStore": "absent"}));
    let err = missing.get("r.example").unwrap_err().to_string();
    assert!(
        err.contains("docker-credential-absent") && err.contains("r.example"),
        "{err}"
    );
}

#[test]
fn debug_redacts_secret() {
    let c = cred("alice", "hunter2");
    let shown = format!("{c:?}");
    assert!(
        shown.contains("alice") && !shown.contains("hunter2"),
        "{shown}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AuthConfig::load(&dir.path().join("c.json")).unwrap();
    cfg.store("r.example", &c).unwrap();
    assert!(!format!("{cfg:?}").contains(&b64_encode(b"alice:hunter2")));
}

#[test]
fn base64_round_trip() {
    for s in ["", "a", "ab", "abc", "abcd", "user:pa:ss"] {
        assert_eq!(b64_decode(&b64_encode(s.as_bytes())).unwrap(), s.as_bytes());
    }
    assert_eq!(b64_encode(b"ab"), "YWI=");
    assert_eq!(b64_decode("YWI").unwrap(), b"ab");
}
