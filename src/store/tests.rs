use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use super::*;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    (dir, s)
}

fn desc(d: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: MANIFEST.to_string(),
        digest: d,
        size,
        annotations: Default::default(),
        platform: None,
    }
}

fn tmp_count(root: &Path) -> usize {
    fs::read_dir(root.join("tmp")).unwrap().count()
}

#[test]
fn digest_parse_rejects_bad_input() {
    let ok = format!("sha256:{}", "a".repeat(64));
    let d = Digest::parse(&ok).unwrap();
    assert_eq!(d.algorithm(), "sha256");
    assert_eq!(d.hex(), "a".repeat(64));
    assert_eq!(d.to_string(), ok);
    for bad in [
        "sha256:abc".to_string(),
        format!("sha512:{}", "a".repeat(64)),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:../{}", "a".repeat(61)),
    ] {
        assert!(Digest::parse(&bad).is_err(), "{bad}");
    }
}

#[test]
fn open_creates_layout_and_rejects_other_version() {
    let (dir, _s) = store();
    let layout: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    // Reopening is idempotent.
    Store::open(dir.path()).unwrap();

    let other = tempfile::tempdir().unwrap();
    fs::write(
        other.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    let err = Store::open(other.path()).unwrap_err();
    assert!(err.to_string().contains("2.0.0"), "{err}");
}

#[test]
fn put_get_round_trip_and_idempotent() {
    let (dir, s) = store();
    let (d, n) = s.put_bytes(b"hello").unwrap();
    assert_eq!(n, 5);
    assert_eq!(d, Digest::of_bytes(b"hello"));
    assert_eq!(
        d.hex(),
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert!(s.has(&d));
    assert_eq!(s.read_blob(&d).unwrap(), b"hello");
    let mut streamed = Vec::new();
    s.open_blob(&d).unwrap().read_to_end(&mut streamed).unwrap();
    assert_eq!(streamed, b"hello");

    let (d2, n2) = s.put_reader(&b"hello"[..], Some(&d)).unwrap();
    assert_eq!((d2, n2), (d.clone(), 5));
    assert_eq!(
        fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(tmp_count(dir.path()), 0);
}

#[test]
fn expected_digest_mismatch_stores_nothing() {
    let (dir, s) = store();
    let want = Digest::of_bytes(b"other");
    let err = s.put_reader(&b"hello"[..], Some(&want)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&format!(
            "write blob {want}: digest mismatch: got sha256:2cf24dba"
        )),
        "{msg}"
    );
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(!s.has(&want));
    assert!(!s.has(&Digest::of_bytes(b"hello")));
    assert_eq!(tmp_count(dir.path()), 0);
}

#[test]
fn corrupt_blob_fails_at_eof_and_check_reports_it() {
    let (_dir, s) = store();
    let (d, _) = s.put_bytes(b"good content").unwrap();
    s.set_name("img", desc(d.clone(), 12)).unwrap();
    assert!(s.check().unwrap().is_ok());

    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(s.blob_path(&d))
        .unwrap();
    f.write_all(b"!").unwrap();
    drop(f);

    let err = s.read_blob(&d).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("read blob {d}: digest mismatch")),
        "{err}"
    );

    // The streaming reader hands out the bytes, then fails at EOF.
    let mut r = s.open_blob(&d).unwrap();
    let mut buf = [0u8; 13];
    r.read_exact(&mut buf).unwrap();
    let eof = r.read(&mut buf).unwrap_err();
    assert_eq!(eof.kind(), std::io::ErrorKind::InvalidData);

    let report = s.check().unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.blobs_checked, 1);
    assert_eq!(report.corrupt_blobs.len(), 1);
    assert_eq!(report.corrupt_blobs[0].0, d);
}

#[test]
fn check_reports_missing_blob_stray_and_tmp_files() {
    let (dir, s) = store();
    let (d, _) = s.put_bytes(b"x").unwrap();
    s.set_name("img", desc(d.clone(), 1)).unwrap();
    fs::remove_file(s.blob_path(&d)).unwrap();
    fs::write(dir.path().join("blobs/sha256/junk"), b"").unwrap();
    fs::write(dir.path().join("tmp/blob-leftover"), b"").unwrap();
    let report = s.check().unwrap();
    assert_eq!(report.missing_blobs, vec![("img".to_string(), d)]);
    assert_eq!(report.stray_files.len(), 1);
    assert_eq!(report.stale_tmp_files, 1);
}

#[test]
fn set_name_refuses_missing_blob() {
    let (_dir, s) = store();
    let d = Digest::of_bytes(b"never stored");
    let err = s.set_name("ghost", desc(d.clone(), 3)).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("name \"ghost\" points at missing blob {d}")),
        "{err}"
    );
    assert!(s.names().unwrap().is_empty());
}

#[test]
fn names_replace_and_remove() {
    let (_dir, s) = store();
    let (a, na) = s.put_bytes(b"a").unwrap();
    let (b, nb) = s.put_bytes(b"b").unwrap();
    s.set_name("img:1", desc(a.clone(), na)).unwrap();
    s.set_name("img:2", desc(a.clone(), na)).unwrap();
    s.set_name("img:1", desc(b.clone(), nb)).unwrap();

    let names = s.names().unwrap();
    assert_eq!(names.len(), 2);
    let one = s.resolve("img:1").unwrap().unwrap();
    assert_eq!(one.digest, b);
    assert_eq!(one.annotations[REF_NAME_ANNOTATION], "img:1");
    assert_eq!(s.resolve("img:2").unwrap().unwrap().digest, a);
    assert!(s.resolve("nope").unwrap().is_none());

    assert!(s.remove_name("img:1").unwrap());
    assert!(!s.remove_name("img:1").unwrap());
    assert!(s.resolve("img:1").unwrap().is_none());
    assert_eq!(s.names().unwrap().len(), 1);
}

#[test]
fn index_json_has_oci_index_shape() {
    let (dir, s) = store();
    let (d, n) = s.put_bytes(b"{}").unwrap();
    let mut dsc = desc(d.clone(), n);
    dsc.platform = Some(serde_json::json!({"architecture": "amd64", "os": "linux"}));
    s.set_name("img", dsc).unwrap();

    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
    let m = v["manifests"].as_array().unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["mediaType"], MANIFEST);
    assert_eq!(m[0]["digest"], d.to_string());
    assert_eq!(m[0]["size"], 2);
    assert_eq!(m[0]["annotations"][REF_NAME_ANNOTATION], "img");
    assert_eq!(m[0]["platform"]["os"], "linux");
}

#[test]
fn empty_annotations_and_platform_are_omitted() {
    let d = desc(Digest::of_bytes(b""), 0);
    let v = serde_json::to_value(&d).unwrap();
    assert!(v.get("annotations").is_none());
    assert!(v.get("platform").is_none());
    let back: Descriptor = serde_json::from_value(v).unwrap();
    assert_eq!(back, d);
}

#[test]
fn concurrent_set_name_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (d, n) = Store::open(dir.path())
        .unwrap()
        .put_bytes(b"shared")
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let root = dir.path().to_path_buf();
            let d = d.clone();
            std::thread::spawn(move || {
                // Separate handles: each opens its own lock file description.
                let s = Store::open(&root).unwrap();
                for i in 0..25 {
                    s.set_name(&format!("t{t}/n{i}"), desc(d.clone(), n))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    let names = s.names().unwrap();
    assert_eq!(names.len(), 100);
    for t in 0..4 {
        for i in 0..25 {
            assert!(s.resolve(&format!("t{t}/n{i}")).unwrap().is_some());
        }
    }
    let _: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(tmp_count(dir.path()), 0);
}

#[test]
fn large_blob_is_streamed() {
    let (dir, s) = store();
    const SIZE: u64 = 50 * 1024 * 1024;
    let (d, n) = s
        .put_reader(std::io::repeat(0xab).take(SIZE), None)
        .unwrap();
    assert_eq!(n, SIZE);
    assert_eq!(fs::metadata(s.blob_path(&d)).unwrap().len(), SIZE);
    let copied = std::io::copy(&mut s.open_blob(&d).unwrap(), &mut std::io::sink()).unwrap();
    assert_eq!(copied, SIZE);
    assert_eq!(tmp_count(dir.path()), 0);
}

#[test]
fn open_blob_missing_is_not_found() {
    let (_dir, s) = store();
    let d = Digest::of_bytes(b"absent");
    assert!(matches!(
        s.open_blob(&d),
        Err(StoreError::BlobNotFound { .. })
    ));
}

#[test]
fn default_root_is_absolute() {
    assert!(Store::default_root().is_absolute());
}

/// Stores a one-layer image (layer, config, manifest) unique to `tag` and
/// returns its manifest descriptor and the three digests.
fn put_image(s: &Store, tag: &str) -> (Descriptor, [Digest; 3]) {
    let (layer, _) = s.put_bytes(format!("layer {tag}").as_bytes()).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.to_string()]},
    });
    let (config, config_size) = s.put_bytes(config.to_string().as_bytes()).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.to_string(),
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer.to_string(),
            "size": format!("layer {tag}").len(),
        }],
    });
    let (m, n) = s.put_bytes(manifest.to_string().as_bytes()).unwrap();
    (desc(m.clone(), n), [m, config, layer])
}

fn record(image: Descriptor, slot: &str, instruction: &str) -> CacheRecord {
    CacheRecord {
        image,
        inputs: [("instruction".to_string(), instruction.to_string())].into(),
        slot: slot.to_string(),
    }
}

fn key(s: &str) -> Digest {
    Digest::of_bytes(s.as_bytes())
}

/// Moves every blob's mtime two hours back, past the gc grace period.
fn age_all_blobs(root: &Path) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    for e in fs::read_dir(root.join("blobs/sha256")).unwrap() {
        fs::File::options()
            .append(true)
            .open(e.unwrap().path())
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
}

#[test]
fn cache_put_get_and_last_for_slot() {
    let (dir, s) = store();
    let (img, _) = put_image(&s, "a");
    let one = record(img.clone(), "slot-1", "RUN a");
    s.cache_put(&key("k1"), &one).unwrap();
    assert_eq!(s.cache_get(&key("k1")).unwrap(), Some(one.clone()));
    assert_eq!(s.cache_get(&key("k2")).unwrap(), None);
    assert_eq!(s.cache_last_for_slot("slot-1").unwrap(), Some(one.clone()));
    assert_eq!(s.cache_last_for_slot("slot-2").unwrap(), None);
    // Idempotent; a later key for the slot becomes its latest.
    s.cache_put(&key("k1"), &one).unwrap();
    let (img2, _) = put_image(&s, "b");
    let two = record(img2, "slot-1", "RUN b");
    s.cache_put(&key("k2"), &two).unwrap();
    assert_eq!(s.cache_last_for_slot("slot-1").unwrap(), Some(two));
    assert_eq!(s.cache_get(&key("k1")).unwrap(), Some(one));
    let report = s.check().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.cache_records, 2);
    // Written through tmp/, nothing left there; one file per key.
    assert_eq!(tmp_count(dir.path()), 0);
    assert_eq!(
        fs::read_dir(dir.path().join("cache/keys")).unwrap().count(),
        2
    );
}

#[test]
fn cache_put_refuses_a_record_whose_blobs_are_missing() {
    let (_dir, s) = store();
    let (img, [_, _, layer]) = put_image(&s, "a");
    let ghost = desc(Digest::of_bytes(b"no manifest"), 3);
    let err = s
        .cache_put(&key("k"), &record(ghost.clone(), "slot", "RUN a"))
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "cache record {} needs missing blob {}",
            key("k"),
            ghost.digest
        )),
        "{err}"
    );
    fs::remove_file(s.blob_path(&layer)).unwrap();
    let err = s
        .cache_put(&key("k"), &record(img, "slot", "RUN a"))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::CacheMissingBlob { digest, .. } if *digest == layer),
        "{err}"
    );
    assert_eq!(s.cache_get(&key("k")).unwrap(), None);
    assert_eq!(s.cache_last_for_slot("slot").unwrap(), None);
    assert_eq!(s.check().unwrap().cache_records, 0);
}

#[test]
fn cache_get_misses_when_a_blob_is_gone_and_check_reports_it() {
    let (_dir, s) = store();
    let (img, [_, config, _]) = put_image(&s, "a");
    let rec = record(img, "slot", "RUN a");
    s.cache_put(&key("k"), &rec).unwrap();
    fs::remove_file(s.blob_path(&config)).unwrap();
    assert_eq!(s.cache_get(&key("k")).unwrap(), None);
    // Still there to explain a miss.
    assert_eq!(s.cache_last_for_slot("slot").unwrap(), Some(rec));
    let report = s.check().unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.cache_missing_blobs, vec![(key("k"), config)]);
}

#[test]
fn corrupt_or_misplaced_records_are_misses_and_reported() {
    let (dir, s) = store();
    let (img, _) = put_image(&s, "a");
    s.cache_put(&key("k"), &record(img, "slot", "RUN a"))
        .unwrap();
    let keys = dir.path().join("cache/keys");
    // A valid record under another key's name must not serve that key.
    fs::copy(
        keys.join(format!("{}.json", key("k").hex())),
        keys.join(format!("{}.json", key("other").hex())),
    )
    .unwrap();
    assert_eq!(s.cache_get(&key("other")).unwrap(), None);
    fs::write(keys.join(format!("{}.json", key("k").hex())), b"{oops").unwrap();
    assert_eq!(s.cache_get(&key("k")).unwrap(), None);
    assert_eq!(s.cache_last_for_slot("slot").unwrap(), None);
    let report = s.check().unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.corrupt_cache_records.len(), 2, "{report:?}");
    // Dropping the cache clears them.
    let gc = s
        .gc(&GcOptions {
            drop_cache: true,
            ..GcOptions::default()
        })
        .unwrap();
    assert_eq!(gc.removed_cache.len(), 2);
    assert!(s.check().unwrap().is_ok());
}

#[test]
fn gc_keeps_cached_images_until_the_cache_is_dropped() {
    let (dir, s) = store();
    let (img, blobs) = put_image(&s, "a");
    let rec = record(img, "slot", "RUN a");
    s.cache_put(&key("k"), &rec).unwrap();
    let (_, other) = put_image(&s, "unreferenced");
    age_all_blobs(dir.path());

    let report = s.gc(&GcOptions::default()).unwrap();
    let mut removed: Vec<Digest> = report.removed.iter().map(|(d, _)| d.clone()).collect();
    removed.sort();
    let mut want = other.to_vec();
    want.sort();
    assert_eq!(removed, want, "only the unreferenced image goes");
    assert!(report.removed_cache.is_empty());
    assert!(s.unreferenced_blobs().unwrap().is_empty());
    assert_eq!(s.cache_get(&key("k")).unwrap(), Some(rec));

    // The hit refreshed the blobs' age: dropping the cache now keeps them
    // for the grace period (a build may be about to name them).
    let report = s
        .gc(&GcOptions {
            drop_cache: true,
            ..GcOptions::default()
        })
        .unwrap();
    assert_eq!(report.removed_cache, vec![key("k")]);
    assert!(report.removed.is_empty());
    assert_eq!(report.kept_young, 3);
    assert_eq!(s.cache_get(&key("k")).unwrap(), None);
    assert_eq!(s.cache_last_for_slot("slot").unwrap(), None);

    // Past the grace period they go.
    age_all_blobs(dir.path());
    let report = s.gc(&GcOptions::default()).unwrap();
    assert_eq!(report.removed.len(), 3);
    assert!(blobs.iter().all(|d| !s.has(d)));
    assert!(s.check().unwrap().is_ok());
}

#[test]
fn drop_cache_removes_context_hash_caches_but_not_saves_in_flight() {
    let (dir, s) = store();
    let ctx = dir.path().join("cache/context");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("abc.json"), b"{}").unwrap();
    fs::write(ctx.join(".abc.json.1.2.tmp"), b"{").unwrap();
    s.gc(&GcOptions {
        drop_cache: true,
        ..GcOptions::default()
    })
    .unwrap();
    assert!(!ctx.join("abc.json").exists());
    assert!(ctx.join(".abc.json.1.2.tmp").exists());
}

#[test]
fn concurrent_cache_writers_and_prune_leave_check_clean() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let (written, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let root = dir.path().to_path_buf();
            let (written, refused) = (written.clone(), refused.clone());
            std::thread::spawn(move || {
                let s = Store::open(&root).unwrap();
                for i in 0..40 {
                    let (img, _) = put_image(&s, &format!("{t}-{i}"));
                    let rec = record(img, &format!("slot-{}", i % 4), &format!("RUN {t} {i}"));
                    // A prune with no grace may take the blobs before the
                    // record is written: the put must then be refused.
                    match s.cache_put(&key(&format!("{t}-{i}")), &rec) {
                        Ok(()) => written.fetch_add(1, Ordering::Relaxed),
                        Err(StoreError::CacheMissingBlob { .. }) => {
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => panic!("{e}"),
                    };
                    if let Some(got) = s.cache_get(&key(&format!("{t}-{i}"))).unwrap() {
                        assert_eq!(got.inputs["instruction"], format!("RUN {t} {i}"));
                    }
                }
            })
        })
        .collect();
    let pruner = {
        let root = dir.path().to_path_buf();
        let done = done.clone();
        std::thread::spawn(move || {
            let s = Store::open(&root).unwrap();
            let mut rounds = 0;
            while !done.load(Ordering::Relaxed) || rounds < 5 {
                s.gc(&GcOptions {
                    grace: std::time::Duration::ZERO,
                    // Early rounds also drop the cache; later ones must
                    // keep what the writers record.
                    drop_cache: rounds % 3 == 2 && rounds < 20,
                    ..GcOptions::default()
                })
                .unwrap();
                let report = s.check().unwrap();
                assert!(report.is_ok(), "{report:?}");
                rounds += 1;
                // Let writers get some records in between.
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            rounds
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let rounds = pruner.join().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let report = s.check().unwrap();
    assert!(report.is_ok(), "{report:?}");
    let (written, refused) = (
        written.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    assert_eq!(written + refused, 80);
    eprintln!(
        "{written} records written, {refused} refused, {rounds} prunes, {} records left",
        report.cache_records
    );
    // Every surviving record still resolves with all of its blobs, and a
    // last prune keeps them all.
    s.gc(&GcOptions {
        grace: std::time::Duration::ZERO,
        ..GcOptions::default()
    })
    .unwrap();
    assert_eq!(s.check().unwrap().cache_records, report.cache_records);
    for t in 0..2 {
        for i in 0..40 {
            let k = key(&format!("{t}-{i}"));
            if s.record_path(&k).exists() {
                assert!(s.cache_get(&k).unwrap().is_some(), "{t}-{i}");
            }
        }
    }
}

fn remote_of(d: &Digest) -> RemoteBlob {
    RemoteBlob {
        digest: d.clone(),
        size: 7,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        registry: "127.0.0.1:5000".into(),
        repository: "base".into(),
    }
}

/// Moves every remote record's mtime two hours back.
fn age_all_remote(root: &Path) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    for e in fs::read_dir(root.join("remote")).unwrap() {
        fs::File::options()
            .append(true)
            .open(e.unwrap().path())
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
}

#[test]
fn a_remote_layer_counts_for_names_cache_and_check_until_gc_drops_it() {
    let (dir, s) = store();
    let (img, [manifest, config, layer]) = put_image(&s, "a");
    fs::remove_file(s.blob_path(&layer)).unwrap();
    // Neither bytes nor a record: refused.
    assert!(s
        .set_name_with_blobs("app", img.clone(), &[config.clone(), layer.clone()])
        .is_err());
    assert!(s
        .cache_put(&key("k"), &record(img.clone(), "slot", "RUN a"))
        .is_err());
    s.put_remote(&remote_of(&layer)).unwrap();
    assert!(s.knows(&layer) && !s.has(&layer));
    assert_eq!(s.remote(&layer), Some(remote_of(&layer)));
    s.touch_blob(&layer).unwrap();
    s.set_name_with_blobs("app", img.clone(), &[config.clone(), layer.clone()])
        .unwrap();
    let rec = record(img.clone(), "slot", "RUN a");
    s.cache_put(&key("k"), &rec).unwrap();
    assert_eq!(s.cache_get(&key("k")).unwrap(), Some(rec));
    let report = s.check().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.remote_blobs, 1);

    // Referenced records survive gc, however old.
    age_all_blobs(dir.path());
    age_all_remote(dir.path());
    s.gc(&GcOptions::default()).unwrap();
    assert!(s.remote(&layer).is_some());
    // Unreferenced (name removed, cache dropped) and old: gone with the blobs.
    s.remove_name("app").unwrap();
    s.gc(&GcOptions {
        drop_cache: true,
        ..GcOptions::default()
    })
    .unwrap();
    assert!(!s.knows(&layer) && !s.has(&manifest));
    assert_eq!(s.check().unwrap().remote_blobs, 0);

    // A record whose bytes arrived is redundant: gc drops it at once.
    let (_, [_, _, layer2]) = put_image(&s, "b");
    fs::write(
        s.remote_path(&layer2),
        serde_json::to_vec(&remote_of(&layer2)).unwrap(),
    )
    .unwrap();
    assert_eq!(s.remote(&layer2), None, "bytes win over the record");
    s.gc(&GcOptions::default()).unwrap();
    assert!(!s.remote_path(&layer2).exists());
    // A record naming another digest is corrupt for check.
    fs::write(
        s.remote_path(&layer),
        serde_json::to_vec(&remote_of(&layer2)).unwrap(),
    )
    .unwrap();
    let report = s.check().unwrap();
    assert_eq!(report.corrupt_remote_records.len(), 1, "{report:?}");
}
