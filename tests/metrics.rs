//! `GET /metrics` of the metadata server, every provider and a mount
//! started with `--metrics`: each scrape passes `promtool check metrics`
//! (Debian's prometheus package), and the figures move by at least what a
//! file written and read through the mount must move them.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use tfsfs::metrics as m;

const MIB: usize = 1 << 20;

/// Reads Prometheus text on stdin, writes its samples as JSON:
/// [[family type, sample name, labels, value], ...].
const PARSE: &str = "import sys, json
from prometheus_client.parser import text_string_to_metric_families as families
print(json.dumps([[f.type, s.name, s.labels, s.value]
                  for f in families(sys.stdin.read()) for s in f.samples]))";

/// A sample: (family type, name, labels, value).
type Sample = (String, String, HashMap<String, String>, f64);

/// One scrape, checked by promtool (syntax and naming lint) and parsed by
/// the Prometheus Python client's parser.
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

/// `program ARGS < input`'s stdout; fails the test unless it succeeds.
fn pipe(program: &str, args: &[&str], input: &str, what: &str) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test.sh installs it)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}{}\n{input}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

async fn scrape(base: &str) -> Scrape {
    let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200, "GET {base}/metrics (no credentials)");
    let ctype = r.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = r.text().await.unwrap();
    let what = format!("{base}/metrics");
    pipe("promtool", &["check", "metrics"], &text, &what);
    // Debian's interpreter, where python3-prometheus-client is.
    let json = pipe("/usr/bin/python3", &["-c", PARSE], &text, &what);
    let samples = serde_json::from_slice(&json).unwrap();
    Scrape { text, samples }
}

impl Scrape {
    /// The sum of `name`'s samples whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(_, n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.3)
            .sum()
    }

    /// `name`'s lines, for failure messages.
    fn lines(&self, name: &str) -> String {
        self.text
            .lines()
            .filter(|l| l.starts_with(name))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Is `name` a histogram with buckets?
    fn is_histogram(&self, name: &str) -> bool {
        let bucket = format!("{name}_bucket");
        self.samples
            .iter()
            .filter(|(t, n, _, _)| t == "histogram" && *n == bucket)
            .count()
            > 1
    }
}

/// Every server's scrape at one moment.
struct All {
    meta: Scrape,
    providers: Vec<Scrape>,
    mount: Scrape,
}

impl All {
    async fn take(c: &TestCluster, mount: &str) -> All {
        let mut providers = Vec::new();
        for p in &c.providers {
            providers.push(scrape(&p.url).await);
        }
        All {
            meta: scrape(&c.meta.url).await,
            providers,
            mount: scrape(mount).await,
        }
    }

    /// `name` summed over every provider.
    fn providers_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.providers.iter().map(|s| s.sum(name, labels)).sum()
    }

    fn texts(&self) -> impl Iterator<Item = &str> {
        self.providers
            .iter()
            .chain([&self.meta, &self.mount])
            .map(|s| s.text.as_str())
    }
}

/// The file's bytes, every one asked of the mount: O_DIRECT passes the
/// kernel's page cache, which fadvise cannot always empty (pages the
/// kernel is still busy with stay).
fn read_uncached(path: &std::path::Path) -> Vec<u8> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let mut out = Vec::new();
    f.read_to_end(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_server_serves_metrics_that_move_with_work() {
    let c = TestCluster::start_with(6, &["--partition-size", "1048576"]).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mnt = TestMount::with_args(&c, true, &["--metrics", &addr, "--no-sidecar"]);
    let mount_url = format!("http://{addr}");
    let before = All::take(&c, &mount_url).await;

    // Bytes written and not yet uploaded are staged.
    let mut draft = std::fs::File::create(mnt.path("draft.bin")).unwrap();
    draft.write_all(&random_bytes(MIB, 11)).unwrap();
    let staged = scrape(&mount_url).await.sum(m::STAGING_BYTES, &[]);
    assert!(staged >= MIB as f64, "{staged} bytes staged");
    drop(draft);

    let data = random_bytes(3 * MIB, 10);
    let path = mnt.path("quarterly-report.bin");
    std::fs::write(&path, &data).unwrap();
    let layout = c.layout("/quarterly-report.bin").await;
    // One object per partition, or one object of three partitions.
    let parts: Vec<_> = layout
        .fragments
        .iter()
        .flat_map(|f| &f.object.partitions)
        .collect();
    assert_eq!(parts.len(), 3, "three partitions of 1 MiB");
    let shard_bytes: u64 = parts
        .iter()
        .flat_map(|p| &p.shards)
        .map(|s| s.size * s.providers.len() as u64)
        .sum();
    // A read fetches at least k shards of each partition.
    let read_bytes: u64 = parts.iter().map(|p| p.shards[0].size * p.k as u64).sum();

    // A file of one partition: its block stays cached once read.
    let note = random_bytes(MIB / 2, 12);
    let note_path = mnt.path("note.bin");
    std::fs::write(&note_path, &note).unwrap();

    assert!(read_uncached(&path) == data, "first read");
    assert!(read_uncached(&note_path) == note, "first read");
    let between = scrape(&mount_url).await;
    assert!(read_uncached(&note_path) == note, "second read");
    let after_note = scrape(&mount_url).await;
    assert!(read_uncached(&path) == data, "second read");
    let after = All::take(&c, &mount_url).await;

    let grew = |a: &Scrape, b: &Scrape, name: &str, labels: &[(&str, &str)]| {
        b.sum(name, labels) - a.sum(name, labels)
    };
    let len = data.len() as f64;

    // The mount: the upload, the partition reads, the block cache.
    let ok = [("result", "ok")];
    let (mb, ma) = (&before.mount, &after.mount);
    assert!(grew(mb, ma, m::UPLOADS, &ok) >= 1.0, "uploads");
    assert!(grew(mb, ma, m::UPLOAD_BYTES, &[]) >= len, "upload bytes");
    let upload_count = format!("{}_count", m::UPLOAD_SECONDS);
    assert!(grew(mb, ma, &upload_count, &ok) >= 1.0, "upload durations");
    assert!(
        ma.is_histogram(m::UPLOAD_SECONDS),
        "a histogram with buckets"
    );
    assert!(
        grew(mb, &between, m::PARTITION_READS, &ok) >= 3.0,
        "partition reads"
    );
    assert!(
        grew(mb, &between, m::PARTITION_READ_BYTES, &[]) >= len,
        "partition read bytes"
    );
    assert!(
        grew(mb, &between, m::CACHE_MISSES, &[]) >= 4.0,
        "the first reads miss each partition"
    );
    // The small file's block is held; the big file's go once read whole
    // (the kernel's page cache holds those bytes), all but the last two:
    // read again past the page cache, its first is fetched again.
    assert!(
        grew(&between, &after_note, m::CACHE_HITS, &[]) >= 1.0,
        "the second read of the small file finds its block cached"
    );
    assert_eq!(
        grew(&between, &after_note, m::CACHE_MISSES, &[]),
        0.0,
        "the small file is not fetched again"
    );
    let held = between.sum(m::CACHE_BYTES, &[]);
    let misses = grew(&after_note, ma, m::CACHE_MISSES, &[]);
    assert!(
        misses >= 1.0,
        "the big file's first block went once two more were read whole \
         ({misses} misses, {held} bytes held)"
    );
    assert!(
        held >= note.len() as f64 && held < len,
        "the cache holds the small file's block, not the big file's: {held} bytes"
    );
    assert!(
        ma.sum(
            m::HTTP_REQUESTS,
            &[("service", "mount"), ("route", "/metrics")]
        ) >= 1.0,
        "the mount's own listener counts its scrapes"
    );

    // The metadata server: the upload's requests, by route template. The
    // file of three partitions ends at a commit of their list.
    let (eb, ea) = (&before.meta, &after.meta);
    let commit = [
        ("service", "meta"),
        ("route", "/api/ns/{appid}/{uid}/commit"),
        ("status", "200"),
    ];
    assert!(
        grew(eb, ea, m::HTTP_REQUESTS, &commit) >= 1.0,
        "upload committed:\n{}",
        ea.lines(m::HTTP_REQUESTS)
    );
    let commit_count = format!("{}_count", m::HTTP_SECONDS);
    assert!(grew(eb, ea, &commit_count, &commit) >= 1.0, "its latency");
    assert!(ea.is_histogram(m::HTTP_SECONDS), "a histogram with buckets");
    assert_eq!(ea.sum(m::META_PROVIDER_UP, &[]), 6.0, "six providers alive");
    assert!(
        ea.sum(m::META_PROVIDER_CAPACITY, &[]) > 0.0,
        "provider capacity"
    );
    assert!(
        ea.sum(m::PARTITIONS, &[("health", "full")]) >= 3.0,
        "the file's partitions are whole"
    );

    // The providers: at least the shard bytes came in, and k shards of
    // each partition went out per read.
    let put = [("method", "PUT"), ("route", "/shards/{sha1}")];
    let get = [("method", "GET"), ("route", "/shards/{sha1}")];
    let providers_grew = |name: &str, labels: &[(&str, &str)]| {
        after.providers_sum(name, labels) - before.providers_sum(name, labels)
    };
    assert!(
        providers_grew(m::HTTP_BYTES_IN, &put) >= shard_bytes as f64,
        "request bytes of shard PUTs"
    );
    assert!(
        providers_grew(m::PROVIDER_RECEIVED, &[]) >= shard_bytes as f64,
        "shard bytes stored"
    );
    assert!(
        providers_grew(m::HTTP_BYTES_OUT, &get) >= read_bytes as f64,
        "response bytes of shard GETs"
    );
    assert!(
        after.providers_sum(m::PROVIDER_SHARDS, &[]) >= 18.0,
        "3 partitions of 4+2 shards held"
    );
    for (i, s) in after.providers.iter().enumerate() {
        let id = c.health(i).await.id;
        assert!(
            s.sum(
                m::HTTP_REQUESTS,
                &[("service", "provider"), ("provider", &id)]
            ) >= 1.0,
            "provider {id} labels its series with its id"
        );
    }

    // No account data in any label: no file names, no appkeys.
    for text in after.texts() {
        assert!(!text.contains("quarterly-report"), "a path leaked:\n{text}");
        assert!(!text.contains(&c.appkey), "an appkey leaked:\n{text}");
    }
}

/// `tfsfs cluster` runs meta and providers in one process with one
/// recorder: each server's `/metrics` shows every series, told apart by
/// their labels.
#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_cluster_labels_each_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("c");
    let cluster = Proc::spawn(&[
        "cluster",
        "--data",
        data.to_str().unwrap(),
        "--providers",
        "3",
        "--listen",
        "127.0.0.1:0",
    ]);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("cluster.json")).unwrap()).unwrap();
    let ids: Vec<&str> = info["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    let meta = scrape(&cluster.url).await;
    let provider = scrape(info["providers"][0]["url"].as_str().unwrap()).await;
    for s in [&meta, &provider] {
        let enrolls = [("service", "meta"), ("route", "/api/providers/enroll")];
        assert!(
            s.sum(m::HTTP_REQUESTS, &enrolls) >= 3.0,
            "each provider enrolled"
        );
        for id in &ids {
            assert_eq!(
                s.sum(
                    m::PROVIDER_CAPACITY,
                    &[("service", "provider"), ("provider", id)]
                )
                .signum(),
                1.0,
                "provider {id}'s own series"
            );
            assert_eq!(
                s.sum(m::META_PROVIDER_UP, &[("provider", id)]),
                1.0,
                "the registry's view of {id}"
            );
        }
    }
}
