//! `tfsfs get` is all or nothing: a download that cannot read every byte
//! fails and leaves the destination as it was.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{assert_ok, random_bytes, TestCluster};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_get_leaves_the_destination_as_it_was() {
    let mut c = TestCluster::start(6).await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.bin");
    // Erasure-coded (RS 4+2), three partitions.
    let data = random_bytes(9 << 20, 11);
    std::fs::write(&src, &data).unwrap();
    assert_ok(&c.put(&src, "/f.bin", true), "put");
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();

    // A normal get: the same bytes, with the mode a plain create gives.
    let good = out.join("good.bin");
    assert_ok(&c.get("/f.bin", &good, true), "get");
    assert_eq!(std::fs::read(&good).unwrap(), data);
    let existing = out.join("existing.bin");
    std::fs::write(&existing, b"the old bytes").unwrap();
    assert_eq!(mode(&good), mode(&existing));

    // Three of six providers gone: no partition can be decoded.
    for p in &mut c.providers[..3] {
        p.kill();
    }
    let fresh = out.join("fresh.bin");
    let r = c.get("/f.bin", &fresh, true);
    assert!(!r.status.success(), "get succeeded without its shards");
    let said = String::from_utf8_lossy(&r.stderr);
    assert!(
        said.contains("cannot download /f.bin") && said.contains("is left as it was"),
        "{said}"
    );
    assert!(!fresh.exists(), "a failed get left {}", fresh.display());
    let r = c.get("/f.bin", &existing, true);
    assert!(!r.status.success(), "get succeeded without its shards");
    assert_eq!(std::fs::read(&existing).unwrap(), b"the old bytes");
    // No temporary file stays behind either.
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["existing.bin", "good.bin"]);
}
