//! Walker behaviour the fsutil vectors do not pin down.

use std::path::Path;

use super::*;

/// `name/` is a directory, `name -> target` a symlink, anything else a file
/// whose contents are its own path.
fn tree(spec: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for item in spec {
        let path = tmp.path();
        if let Some(dir) = item.strip_suffix('/') {
            fs::create_dir_all(path.join(dir)).unwrap();
        } else if let Some((link, target)) = item.split_once(" -> ") {
            std::os::unix::fs::symlink(target, path.join(link)).unwrap();
        } else {
            fs::write(path.join(item), item).unwrap();
        }
    }
    tmp
}

fn exclude(patterns: &[&str]) -> FilterOpts {
    FilterOpts {
        exclude: patterns.iter().map(|p| p.to_string()).collect(),
        ..FilterOpts::default()
    }
}

fn include(patterns: &[&str]) -> FilterOpts {
    FilterOpts {
        include: patterns.iter().map(|p| p.to_string()).collect(),
        ..FilterOpts::default()
    }
}

fn follow(paths: &[&str]) -> FilterOpts {
    FilterOpts {
        follow_paths: paths.iter().map(|p| p.to_string()).collect(),
        ..FilterOpts::default()
    }
}

fn listing(root: &Path, filters: Vec<FilterOpts>, start: &str) -> Vec<String> {
    let view = FilteredFs::new(root, filters).unwrap();
    let mut out = Vec::new();
    view.walk(start, |e| {
        out.push(match &e.kind {
            EntryKind::Dir => format!("{}/", e.path),
            EntryKind::Symlink(t) => format!("{} -> {t}", e.path),
            EntryKind::File => e.path.clone(),
        });
        Ok(WalkAction::Continue)
    })
    .unwrap();
    out
}

#[test]
fn normalize_keeps_paths_inside() {
    assert_eq!(normalize("").unwrap(), "");
    assert_eq!(normalize("/").unwrap(), "");
    assert_eq!(normalize("./a//b/").unwrap(), "a/b");
    assert_eq!(normalize("/../a").unwrap(), "a");
    assert!(normalize("../a").is_err());
    assert!(normalize("a/../..").is_err());
}

#[test]
fn order_is_bytewise_and_parents_first() {
    let t = tree(&["b/", "b/z", "B", "a.txt", "a/", "a/x"]);
    assert_eq!(
        listing(t.path(), vec![], ""),
        ["B", "a/", "a/x", "a.txt", "b/", "b/z"]
    );
}

#[test]
fn exception_reincludes_below_an_excluded_dir() {
    let t = tree(&[
        "node_modules/",
        "node_modules/keep/",
        "node_modules/keep/k",
        "node_modules/drop/",
        "node_modules/drop/d",
        "src",
    ]);
    let got = listing(
        t.path(),
        vec![exclude(&["node_modules", "!node_modules/keep"])],
        "",
    );
    assert_eq!(
        got,
        [
            "node_modules/",
            "node_modules/keep/",
            "node_modules/keep/k",
            "src"
        ]
    );
}

#[test]
fn include_with_wildcards_lists_parents_once() {
    let t = tree(&["a/", "a/b/", "a/b/x.go", "a/b/y.go", "a/c.txt", "z.go"]);
    let got = listing(t.path(), vec![include(&["**/*.go"])], "");
    assert_eq!(got, ["a/", "a/b/", "a/b/x.go", "a/b/y.go", "z.go"]);
}

#[test]
fn walk_from_a_subdirectory_and_a_missing_start() {
    let t = tree(&["a/", "a/b/", "a/b/c", "a/d"]);
    assert_eq!(listing(t.path(), vec![], "a/b"), ["a/b/", "a/b/c"]);
    assert_eq!(listing(t.path(), vec![], "/a/d"), ["a/d"]);
    assert!(listing(t.path(), vec![], "nope").is_empty());
    let view = FilteredFs::new(t.path(), vec![]).unwrap();
    assert!(view.walk("../x", |_| Ok(WalkAction::Continue)).is_err());
}

#[test]
fn excluded_start_is_not_listed() {
    let t = tree(&["a/", "a/b/", "a/b/c"]);
    assert!(listing(t.path(), vec![exclude(&["a"])], "a/b").is_empty());
}

#[test]
fn stacked_filters_each_filter_the_previous_view() {
    let t = tree(&["a/", "a/b/", "a/b/c", "a/b/d", "a/e"]);
    let got = listing(
        t.path(),
        vec![include(&["a/b"]), exclude(&["a/b", "!a/b/c"])],
        "",
    );
    assert_eq!(got, ["a/", "a/b/", "a/b/c"]);
    assert!(listing(t.path(), vec![include(&["a/b/c"]), exclude(&["a"])], "").is_empty());
}

#[test]
fn skipping_a_late_listed_parent_skips_its_subtree() {
    let t = tree(&[
        "a/",
        "a/b/",
        "a/b/x.txt",
        "a/c/",
        "a/c/y.txt",
        "d/",
        "d/z.txt",
    ]);
    let view = FilteredFs::new(t.path(), vec![include(&["**/*.txt"]), exclude(&["q"])]).unwrap();
    let mut seen = Vec::new();
    view.walk("", |e| {
        seen.push(e.path.clone());
        Ok(if e.path == "a" {
            WalkAction::SkipDir
        } else {
            WalkAction::Continue
        })
    })
    .unwrap();
    assert_eq!(seen, ["a", "d", "d/z.txt"]);
}

#[test]
fn stop_ends_the_walk() {
    let t = tree(&["a", "b", "c"]);
    let view = FilteredFs::new(t.path(), vec![]).unwrap();
    let mut seen = Vec::new();
    view.walk("", |e| {
        seen.push(e.path.clone());
        Ok(if e.path == "b" {
            WalkAction::Stop
        } else {
            WalkAction::Continue
        })
    })
    .unwrap();
    assert_eq!(seen, ["a", "b"]);
}

#[test]
fn callback_errors_pass_through() {
    let t = tree(&["a"]);
    let view = FilteredFs::new(t.path(), vec![]).unwrap();
    let err = view
        .walk("", |_| Err(ContextError::Callback("boom".into())))
        .unwrap_err();
    assert_eq!(err.to_string(), "boom");
}

#[test]
fn symlinks_are_listed_not_followed() {
    let t = tree(&["d/", "d/f", "l -> d", "out -> /etc"]);
    assert_eq!(
        listing(t.path(), vec![], ""),
        ["d/", "d/f", "l -> d", "out -> /etc"]
    );
}

#[test]
fn open_refuses_symlinks_and_filtered_paths() {
    let t = tree(&["d/", "d/f", "l -> d", "secret"]);
    let view = FilteredFs::new(t.path(), vec![exclude(&["secret"])]).unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut view.open("/d/./f").unwrap(), &mut s).unwrap();
    assert_eq!(s, "d/f");
    assert!(matches!(
        view.open("l/f"),
        Err(ContextError::InvalidPath { .. })
    ));
    assert!(matches!(
        view.open("l"),
        Err(ContextError::InvalidPath { .. })
    ));
    assert!(view.open("secret").unwrap_err().is_not_found());
    assert!(view.open("missing").unwrap_err().is_not_found());
    assert!(view.open("../etc/passwd").is_err());
}

#[test]
fn walk_start_through_a_symlink_is_refused() {
    let t = tree(&["d/", "d/f", "l -> d"]);
    let view = FilteredFs::new(t.path(), vec![]).unwrap();
    let err = view.walk("l/f", |_| Ok(WalkAction::Continue)).unwrap_err();
    assert!(matches!(err, ContextError::InvalidPath { .. }), "{err}");
}

#[test]
fn follow_paths_resolve_relative_links_inside_the_root() {
    let t = tree(&[
        "a/",
        "a/l -> ../../../b",
        "b",
        "c",
        "loop1 -> loop2",
        "loop2 -> loop1",
    ]);
    assert_eq!(
        listing(t.path(), vec![follow(&["a/l"])], ""),
        ["a/", "a/l -> ../../../b", "b"]
    );
    assert_eq!(
        listing(t.path(), vec![follow(&["loop1"])], ""),
        ["loop1 -> loop2", "loop2 -> loop1"]
    );
    // Reaching the root lifts the restriction.
    assert_eq!(listing(t.path(), vec![follow(&["."])], "").len(), 6);
    assert_eq!(
        listing(t.path(), vec![follow(&["nope"])], ""),
        Vec::<String>::new()
    );
}

#[test]
fn follow_paths_only_see_the_view_below() {
    let t = tree(&["l -> t", "t"]);
    let hidden = vec![exclude(&["l"]), follow(&["l"])];
    assert!(listing(t.path(), hidden, "").is_empty());
    let shown = vec![FilterOpts::default(), follow(&["l"])];
    assert_eq!(listing(t.path(), shown, ""), ["l -> t", "t"]);
}

#[test]
fn invalid_patterns_and_roots_are_rejected() {
    let t = tree(&["f"]);
    let err = FilteredFs::new(t.path(), vec![exclude(&["!"])]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid exclude patterns [\"!\"]: illegal exclusion pattern: \"!\""
    );
    assert!(FilteredFs::new(t.path().join("f"), vec![]).is_err());
    assert!(FilteredFs::new(t.path().join("missing"), vec![]).is_err());
    // Passes the syntax check, fails when evaluated during the walk.
    let view = FilteredFs::new(t.path(), vec![exclude(&["[z-a]"])]).unwrap();
    let err = view.walk("", |_| Ok(WalkAction::Continue)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("failed to match exclude patterns"),
        "{err}"
    );
}
