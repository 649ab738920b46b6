//! The malicious-layer corpus: each case must be refused with an error naming
//! the layer digest and the entry, and nothing outside the unpack root (a
//! sibling directory with a secret, the test's parent directory, `/etc`) may
//! change.

use std::fs;
use std::path::{Path, PathBuf};

use kiln::layer::{unpack, LayerError, Metadata, Mode, OverlayXattrs, UnpackOptions};

use super::build::*;
use super::tree::snapshot;

/// What a case must do.
enum Expect {
    /// Fail with `LayerError::Unsafe` naming this entry.
    Refused(String),
    /// May succeed (the entry is legal once resolved inside the root) but
    /// must not touch anything outside.
    Contained,
}

struct Case {
    name: &'static str,
    layers: Vec<Vec<Ent>>,
    expect: Expect,
}

/// Every case, with `out` the absolute path of the sentinel directory beside
/// the root and `esc` a name under /etc that must never appear.
fn cases(out: &str, esc: &str) -> Vec<Case> {
    use Expect::*;
    let c = |name, layers, expect| Case {
        name,
        layers,
        expect,
    };
    let outside_file = format!("{out}/secret");
    vec![
        c(
            "dotdot",
            vec![vec![file("../escape", "x")]],
            Refused("../escape".into()),
        ),
        c(
            "dotdot-deep",
            vec![vec![dir("a"), file("a/../../escape", "x")]],
            Refused("a/../../escape".into()),
        ),
        c(
            "dotdot-dir",
            vec![vec![dir("../outside/newdir")]],
            Refused("../outside/newdir".into()),
        ),
        c(
            "absolute",
            vec![vec![file(&format!("{out}/abs"), "x")]],
            Refused("/abs".into()),
        ),
        c(
            "absolute-etc",
            vec![vec![file(&format!("/etc/{esc}"), "x")]],
            Refused(esc.to_string()),
        ),
        c(
            "symlink-abs-then-write",
            vec![vec![symlink("s", out), file("s/file", "pwned")]],
            Refused("s/file".into()),
        ),
        c(
            "symlink-etc-then-write",
            vec![vec![
                symlink("a", "/etc"),
                file(&format!("a/{esc}"), "pwned"),
            ]],
            Refused(esc.to_string()),
        ),
        c(
            "symlink-dotdot-then-write",
            vec![vec![symlink("s", ".."), file("s/x", "pwned")]],
            Refused("s/x".into()),
        ),
        c(
            "symlink-dotdot2-then-mkdir",
            vec![vec![symlink("s", "../.."), dir("s/newdir")]],
            Refused("s/newdir".into()),
        ),
        c(
            "nested-relative-escape",
            vec![vec![
                dir("sub"),
                symlink("sub/up", "../../outside"),
                file("sub/up/x", "pwned"),
            ]],
            Refused("sub/up/x".into()),
        ),
        c(
            "symlink-chain",
            vec![vec![
                symlink("b", out),
                symlink("a", "b"),
                file("a/x", "pwned"),
            ]],
            Refused("a/x".into()),
        ),
        c(
            "symlink-then-hardlink-through-it",
            vec![vec![symlink("s", out), hardlink("h", "s/secret")]],
            Refused("h".into()),
        ),
        c(
            "hardlink-dotdot",
            vec![vec![hardlink("h", "../../etc/passwd")]],
            Refused("h".into()),
        ),
        c(
            "hardlink-absolute",
            vec![vec![hardlink("h", &outside_file)]],
            Refused("h".into()),
        ),
        c(
            "symlink-in-layer1-write-in-layer2",
            vec![vec![symlink("s", out)], vec![file("s/file", "pwned")]],
            Refused("s/file".into()),
        ),
        c(
            "symlink-in-layer1-mkdir-in-layer2",
            vec![
                vec![symlink("s", out)],
                vec![dir("s/sub"), file("s/sub/f", "x")],
            ],
            Refused("s/sub".into()),
        ),
        // Names hidden from a naive header check: the PAX `path` record and
        // the GNU long-name entry are what count.
        c(
            "pax-path-dotdot",
            vec![vec![file("innocent", "x").pax_path("../pax-escape")]],
            Refused("../pax-escape".into()),
        ),
        c(
            "pax-path-absolute",
            vec![vec![file("innocent", "x").pax_path(&format!("{out}/pax-abs"))]],
            Refused("/pax-abs".into()),
        ),
        c(
            "gnu-long-name-dotdot",
            vec![vec![file("innocent", "x").gnu_long_name(&format!("{}../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../gnu-escape", "a/".repeat(60)))]],
            Refused("gnu-escape".into()),
        ),
        c(
            "pax-path-through-symlink",
            vec![vec![symlink("s", out), file("innocent", "x").pax_path("s/pax-through-link")]],
            Refused("s/pax-through-link".into()),
        ),
        c(
            "whiteout-dotdot",
            vec![vec![file(".wh...", "")]],
            Refused(".wh...".into()),
        ),
        c(
            "whiteout-dot",
            vec![vec![dir("a"), file("a/.wh..", "")]],
            Refused("a/.wh..".into()),
        ),
        c(
            "whiteout-parent-dotdot",
            vec![vec![file("../.wh.outside", "")]],
            Refused("../.wh.outside".into()),
        ),
        c(
            "whiteout-through-symlink",
            vec![vec![symlink("s", out)], vec![file("s/.wh.secret", "")]],
            Refused("s/.wh.secret".into()),
        ),
        c(
            "opaque-in-symlinked-dir",
            vec![vec![symlink("s", out)], vec![file("s/.wh..wh..opq", "")]],
            Refused("s/.wh..wh..opq".into()),
        ),
        c(
            "opaque-in-dotdot-symlink",
            vec![vec![symlink("up", ".."), file("up/.wh..wh..opq", "")]],
            Refused("up/.wh..wh..opq".into()),
        ),
        // Legal once resolved in the root: a directory entry replaces the
        // symlink, so the write lands inside.
        c(
            "dir-replaces-symlink-then-write",
            vec![vec![
                symlink("d", out),
                dir("d"),
                file("d/secret", "inside"),
            ]],
            Contained,
        ),
        c(
            "dir-replaces-symlink-across-layers",
            vec![
                vec![symlink("d", out)],
                vec![dir("d"), file("d/secret", "inside")],
            ],
            Contained,
        ),
        // A file entry over a symlink to an outside file replaces the link
        // instead of writing through it.
        c(
            "file-over-symlink-to-outside-file",
            vec![vec![symlink("s", &outside_file)], vec![file("s", "pwned")]],
            Contained,
        ),
        // A hardlink to a symlink links the symlink itself.
        c(
            "hardlink-to-symlink",
            vec![vec![symlink("s", &outside_file), hardlink("h", "s")]],
            Contained,
        ),
        // Removing a symlink to an outside dir must not empty that dir.
        c(
            "whiteout-of-symlink-to-outside-dir",
            vec![vec![symlink("s", out)], vec![file(".wh.s", "")]],
            Contained,
        ),
        // Metadata of a symlink is never applied to its target.
        c(
            "symlink-mode-owner-times",
            vec![vec![symlink("s", &outside_file)
                .mode(0o4777)
                .owner(1, 1)
                .mtime(5)]],
            Contained,
        ),
    ]
}

struct Sandbox {
    _base: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

fn sandbox() -> Sandbox {
    let base = tempfile::Builder::new()
        .prefix("kiln-corpus-")
        .tempdir()
        .unwrap();
    let b = base.path().to_path_buf();
    let root = b.join("root");
    let outside = b.join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir_all(outside.join("dir")).unwrap();
    fs::write(outside.join("secret"), "secret").unwrap();
    fs::write(outside.join("dir/keep"), "keep").unwrap();
    Sandbox {
        _base: base,
        base: b,
        root,
        outside,
    }
}

fn layer_name(data: &[u8]) -> String {
    sha256(data)
}

/// Runs every case in `mode` (overlay: each layer into its own directory).
fn run_corpus(mode: Mode) {
    let esc = format!("kiln-escape-{}", std::process::id());
    let etc_probe = Path::new("/etc").join(&esc);
    let mut failures = Vec::new();
    let probe = sandbox();
    for case in cases(probe.outside.to_str().unwrap(), &esc) {
        let sb = sandbox();
        // The case list is rebuilt per sandbox so paths point at this one.
        let case = cases(sb.outside.to_str().unwrap(), &esc)
            .into_iter()
            .find(|c| c.name == case.name)
            .unwrap();
        let parent = sb.base.parent().unwrap().to_path_buf();
        let before = snapshot(&sb.base, &["root"]);
        let parent_before: Vec<_> = fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with("kiln-corpus-escape"))
            .collect();
        let mut result = Ok(());
        let mut failing_layer = String::new();
        let mut meta = Metadata::default();
        for (i, entries) in case.layers.iter().enumerate() {
            let data = tar(entries);
            let name = layer_name(&data);
            let root = match mode {
                Mode::Flatten => sb.root.clone(),
                Mode::OverlayLower(_) => sb.root.join(i.to_string()),
            };
            fs::create_dir_all(&root).unwrap();
            let mut opts = UnpackOptions::new(name.clone(), mode);
            // Overlay: the earlier layers' dirs, topmost first.
            opts.lowers = (0..i).rev().map(|j| sb.root.join(j.to_string())).collect();
            if let Err(e) = unpack(data.as_slice(), &root, &opts, &mut meta) {
                failing_layer = name;
                result = Err(e);
                break;
            }
        }
        let after = snapshot(&sb.base, &["root"]);
        if before != after {
            failures.push(format!(
                "{}: outside changed:\nbefore {before:#?}\nafter {after:#?}",
                case.name
            ));
        }
        let parent_after: Vec<_> = fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with("kiln-corpus-escape"))
            .collect();
        if parent_before != parent_after {
            failures.push(format!("{}: parent dir changed", case.name));
        }
        if etc_probe.exists() {
            let _ = fs::remove_file(&etc_probe);
            failures.push(format!("{}: wrote {}", case.name, etc_probe.display()));
        }
        // In overlay mode too: a symlink of an earlier layer is seen
        // through `lowers`.
        let must_refuse = matches!(case.expect, Expect::Refused(_));
        match (&case.expect, result) {
            (Expect::Refused(entry), Err(e)) => {
                let msg = e.to_string();
                let unsafe_err = matches!(e, LayerError::Unsafe { .. });
                if !unsafe_err || !msg.contains(&failing_layer) || !msg.contains(entry.as_str()) {
                    failures.push(format!(
                        "{}: wrong error (want Unsafe naming {failing_layer} and {entry:?}): {msg}",
                        case.name
                    ));
                }
            }
            (_, Ok(())) if must_refuse => failures.push(format!("{}: was not refused", case.name)),
            (Expect::Contained, Err(e)) => {
                failures.push(format!("{}: contained case failed: {e}", case.name))
            }
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn malicious_layers_are_refused_flatten() {
    run_corpus(Mode::Flatten);
}

#[test]
fn malicious_layers_are_refused_overlay_lower() {
    run_corpus(Mode::OverlayLower(OverlayXattrs::User));
}

/// The contained cases leave the expected tree inside the root.
#[test]
fn contained_cases_resolve_inside_the_root() {
    let sb = sandbox();
    let out = sb.outside.to_str().unwrap().to_string();
    let mut meta = Metadata::default();
    let layers = [
        vec![symlink("d", &out), symlink("s", &format!("{out}/secret"))],
        vec![dir("d"), file("d/secret", "inside"), file("s", "replaced")],
    ];
    for l in &layers {
        let data = tar(l);
        let opts = UnpackOptions {
            layer: layer_name(&data),
            mode: Mode::Flatten,
            expected_diff_id: None,
            lowers: Vec::new(),
        };
        unpack(data.as_slice(), &sb.root, &opts, &mut meta).unwrap();
    }
    assert!(fs::symlink_metadata(sb.root.join("d")).unwrap().is_dir());
    assert_eq!(
        fs::read_to_string(sb.root.join("d/secret")).unwrap(),
        "inside"
    );
    assert_eq!(fs::read_to_string(sb.root.join("s")).unwrap(), "replaced");
    assert_eq!(
        fs::read_to_string(sb.outside.join("secret")).unwrap(),
        "secret"
    );
}
