//! Unpacked layers in the store: chain ids, reuse, diff_id checks, races.

use std::fs;
use std::sync::{Arc, Barrier};

use kiln::layer::{Mode, OverlayXattrs};
use kiln::store::{chain_ids, Digest, LayerSource, Store, UnpackError};

use super::build::*;

fn put_layers(store: &Store) -> Vec<LayerSource> {
    let layers = [
        tar(&[dir("etc"), file("etc/a", "a"), file("etc/b", "b")]),
        tar(&[file("etc/.wh.a", ""), file("etc/c", "c")]),
    ];
    layers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let blob = if i == 0 { gzip(t) } else { zstd(t) };
            let (digest, _) = store.put_bytes(&blob).unwrap();
            LayerSource {
                blob: digest,
                diff_id: Digest::parse(&sha256(t)).unwrap(),
            }
        })
        .collect()
}

#[test]
fn flatten_once_per_chain_id_then_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let layers = put_layers(&store);
    let first = store.ensure_unpacked(&layers, Mode::Flatten).unwrap();
    assert_eq!(first.len(), 1);
    let u = &first[0];
    let diff_ids: Vec<_> = layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(u.chain_id, chain_ids(&diff_ids)[1]);
    assert!(u.fresh);
    assert_eq!(
        u.rootfs,
        store
            .unpacked_dir(&u.chain_id, Mode::Flatten)
            .join("rootfs")
    );
    let mut names: Vec<_> = fs::read_dir(u.rootfs.join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["b", "c"]);
    assert!(u.metadata.is_file());
    // Second call: nothing unpacked again (same inode, not fresh).
    let ino = |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
    let before = ino(&u.rootfs);
    let again = store.ensure_unpacked(&layers, Mode::Flatten).unwrap();
    assert!(!again[0].fresh);
    assert_eq!(ino(&again[0].rootfs), before);
    assert_eq!(
        fs::read_dir(tmp.path().join("tmp")).unwrap().count(),
        0,
        "no scratch left"
    );
}

#[test]
fn overlay_lower_one_dir_per_chain_id() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let layers = put_layers(&store);
    let mode = Mode::OverlayLower(OverlayXattrs::User);
    let got = store.ensure_unpacked(&layers, mode).unwrap();
    assert_eq!(got.len(), 2);
    assert!(got[0].rootfs.join("etc/a").is_file());
    let wh = fs::symlink_metadata(got[1].rootfs.join("etc/a")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &wh.file_type()
    ));
    // The first layer alone shares the first chain id.
    let again = store.ensure_unpacked(&layers[..1], mode).unwrap();
    assert_eq!(again[0].rootfs, got[0].rootfs);
    assert!(!again[0].fresh);
}

#[test]
fn wrong_diff_id_or_unsafe_layer_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let mut layers = put_layers(&store);
    layers[1].diff_id = Digest::of_bytes(b"not it");
    let err = store.ensure_unpacked(&layers, Mode::Flatten).unwrap_err();
    assert!(err.to_string().contains("diff_id mismatch"), "{err}");
    let evil = tar(&[symlink("s", "/"), file("s/kiln-store-escape", "x")]);
    let (blob, _) = store.put_bytes(&evil).unwrap();
    let layer = LayerSource {
        blob: blob.clone(),
        diff_id: Digest::parse(&sha256(&evil)).unwrap(),
    };
    let err = store.ensure_unpacked(&[layer], Mode::Flatten).unwrap_err();
    assert!(matches!(err, UnpackError::Layer { .. }), "{err}");
    assert!(
        err.to_string().contains(blob.as_str()) && err.to_string().contains("s/kiln-store-escape"),
        "{err}"
    );
    assert!(!std::path::Path::new("/kiln-store-escape").exists());
    let flat = tmp.path().join("unpacked/flat");
    assert_eq!(
        fs::read_dir(&flat).map(|d| d.count()).unwrap_or(0),
        0,
        "nothing stored"
    );
    assert_eq!(
        fs::read_dir(tmp.path().join("tmp")).unwrap().count(),
        0,
        "scratch removed"
    );
}

#[test]
fn concurrent_ensures_of_one_chain_id_unpack_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let layers = Arc::new(put_layers(&store));
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (store, layers, barrier) = (
                Store::open(tmp.path()).unwrap(),
                layers.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .ensure_unpacked(&layers, Mode::Flatten)
                    .unwrap()
                    .remove(0)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|u| u.fresh).count(), 1, "{results:?}");
    assert!(results.windows(2).all(|w| w[0].rootfs == w[1].rootfs));
    assert_eq!(
        fs::read_to_string(results[0].rootfs.join("etc/c")).unwrap(),
        "c"
    );
    assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
}
