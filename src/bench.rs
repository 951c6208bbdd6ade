//! `tfsfs bench DIR`: throughput of a mounted drive beside a local-disk
//! baseline measured in the same run (the machine is noisy), in the manner
//! of `juicefs bench`: one big file written (timed until close returns,
//! i.e. durable) and read cold, many small files written and read, stats.
//! `--meta-ops` measures the metadata server's operations instead.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub big_size: u64,
    pub io_size: usize,
    pub small_count: usize,
    pub small_size: usize,
    /// The process doing the work (the mount), whose CPU time is counted.
    pub pid: Option<u32>,
}

/// One row of results for one directory.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub big_write_mib_s: f64,
    pub big_read_mib_s: f64,
    pub small_write_files_s: f64,
    pub small_read_files_s: f64,
    pub stat_per_s: f64,
    /// 1 MiB writes at random places in the big file, then fsync.
    pub edit_mib_s: f64,
    /// The big file copied to another name in the same directory.
    pub copy_mib_s: f64,
    /// CPU seconds of `pid` per GiB of the big file written (NaN: unknown).
    pub cpu_s_per_gib: f64,
}

/// CPU seconds (user + system) `pid` has used so far.
fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let stat = procfs::process::Process::new(pid? as i32)
        .ok()?
        .stat()
        .ok()?;
    Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// Edits made in place by the edit-in-place measure.
const EDITS: u64 = 16;

/// Fills `buf` with bytes that differ per chunk, so nothing deduplicates.
fn fill(buf: &mut [u8], chunk: u64) {
    let mut x = chunk.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for word in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
}

/// Drops the kernel's page cache (root only); says whether it could.
fn drop_caches() -> bool {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
}

/// Runs every measurement in `dir` (a fresh subdirectory is made and removed).
pub fn measure(dir: &Path, o: &BenchOptions) -> std::io::Result<Figures> {
    let work = dir.join(format!("tfsfs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let mut f = Figures::default();
    let big = work.join("big");
    let mut buf = vec![0u8; o.io_size];
    let cpu_before = cpu_secs(o.pid);
    let start = Instant::now();
    {
        let mut file = File::create(&big)?;
        let mut written = 0u64;
        let mut chunk = 0;
        while written < o.big_size {
            let n = (o.big_size - written).min(o.io_size as u64) as usize;
            fill(&mut buf[..n], chunk);
            file.write_all(&buf[..n])?;
            written += n as u64;
            chunk += 1;
        }
        file.sync_all()?;
    }
    f.big_write_mib_s = mib_s(o.big_size, start.elapsed().as_secs_f64());
    f.cpu_s_per_gib = match (cpu_before, cpu_secs(o.pid)) {
        (Some(a), Some(b)) => (b - a) / (o.big_size as f64 / (1u64 << 30) as f64),
        _ => f64::NAN,
    };
    if !drop_caches() {
        eprintln!("warning: cannot drop the page cache (not root): reads may be warm");
    }
    let start = Instant::now();
    {
        let mut file = File::open(&big)?;
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        if total != o.big_size {
            return Err(std::io::Error::other(format!(
                "read {total} bytes of {}",
                o.big_size
            )));
        }
    }
    f.big_read_mib_s = mib_s(o.big_size, start.elapsed().as_secs_f64());

    let mut edit = vec![0u8; 1 << 20];
    let start = Instant::now();
    {
        let file = std::fs::OpenOptions::new().write(true).open(&big)?;
        let span = o.big_size.saturating_sub(edit.len() as u64).max(1);
        for i in 0..EDITS {
            fill(&mut edit, u64::MAX - i);
            // Spread over the file, deterministic, not partition-aligned.
            let at = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % span;
            std::os::unix::fs::FileExt::write_all_at(&file, &edit, at)?;
        }
        file.sync_all()?;
    }
    f.edit_mib_s = mib_s(EDITS * edit.len() as u64, start.elapsed().as_secs_f64());

    let copy = work.join("big.copy");
    let start = Instant::now();
    std::fs::copy(&big, &copy)?;
    f.copy_mib_s = mib_s(o.big_size, start.elapsed().as_secs_f64());
    std::fs::remove_file(&copy)?;
    std::fs::remove_file(&big)?;

    let small: Vec<PathBuf> = (0..o.small_count)
        .map(|i| work.join(format!("s{i:05}")))
        .collect();
    let mut data = vec![0u8; o.small_size];
    let start = Instant::now();
    for (i, p) in small.iter().enumerate() {
        fill(&mut data, (i as u64 + 1) << 32);
        std::fs::write(p, &data)?;
    }
    f.small_write_files_s = o.small_count as f64 / start.elapsed().as_secs_f64();
    drop_caches();
    let start = Instant::now();
    for p in &small {
        if std::fs::read(p)?.len() != o.small_size {
            return Err(std::io::Error::other(format!(
                "{} has the wrong size",
                p.display()
            )));
        }
    }
    f.small_read_files_s = o.small_count as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let rounds = 3;
    for _ in 0..rounds {
        for p in &small {
            std::fs::metadata(p)?;
        }
    }
    f.stat_per_s = (rounds * o.small_count) as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&work)?;
    Ok(f)
}

/// Peak resident set (VmHWM) of a process, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The pid of the `tfsfs mount` serving `dir`, found by its command line.
pub fn find_mount_pid(dir: &Path) -> Option<u32> {
    let want = std::fs::canonicalize(dir).ok()?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        let is_mount =
            args.iter().any(|a| *a == b"mount") && args.iter().any(|a| *a == b"--foreground");
        let names_dir = args.iter().any(|a| {
            std::fs::canonicalize(Path::new(std::str::from_utf8(a).unwrap_or(""))).ok()
                == Some(want.clone())
        });
        if is_mount && names_dir && args.first().is_some_and(|a| a.ends_with(b"tfsfs")) {
            return Some(pid);
        }
    }
    None
}

/// The table of both rows and their ratio.
pub fn table(drive: &Figures, local: &Figures) -> String {
    let rows = [
        (
            "big file write (MiB/s, until durable)",
            drive.big_write_mib_s,
            local.big_write_mib_s,
        ),
        (
            "big file read, cold (MiB/s)",
            drive.big_read_mib_s,
            local.big_read_mib_s,
        ),
        (
            "small files write (files/s)",
            drive.small_write_files_s,
            local.small_write_files_s,
        ),
        (
            "small files read (files/s)",
            drive.small_read_files_s,
            local.small_read_files_s,
        ),
        ("stat (per s)", drive.stat_per_s, local.stat_per_s),
        (
            "edit in place, 1 MiB random writes + fsync (MiB/s)",
            drive.edit_mib_s,
            local.edit_mib_s,
        ),
        ("copy within (MiB/s)", drive.copy_mib_s, local.copy_mib_s),
    ];
    let mut out =
        String::from("| measure | tfsfs | local disk | tfsfs / local |\n|---|---:|---:|---:|\n");
    for (name, d, l) in rows {
        out.push_str(&format!(
            "| {name} | {d:.1} | {l:.1} | {:.2} |\n",
            d / l.max(1e-9)
        ));
    }
    out.push_str(&format!(
        "\nmount CPU per GiB written: {:.2} s\n",
        drive.cpu_s_per_gib
    ));
    out
}

/// One row of `tfsfs bench --meta-ops`: metadata operations per second
/// over REST v2, with `threads` clients spread over `servers` servers.
#[derive(Debug, Clone)]
pub struct MetaOpsRow {
    pub engine: &'static str,
    pub servers: usize,
    pub threads: usize,
    /// create, stat, rename, list, delete.
    pub per_s: [f64; 5],
}

const META_OPS: [&str; 5] = ["create", "stat", "rename", "list", "delete"];

/// Measures metadata operations on in-process metadata servers: SQLite
/// (one server), and with `db` PostgreSQL with one and two servers on it;
/// 1 and 4 client threads, `ops` operations of each kind per thread.
pub async fn meta_ops(db: Option<&str>, ops: usize) -> anyhow::Result<Vec<MetaOpsRow>> {
    let mut setups: Vec<(Option<&str>, usize)> = vec![(None, 1)];
    if let Some(url) = db {
        setups.extend([(Some(url), 1), (Some(url), 2)]);
    }
    let tmp = tempfile::tempdir()?;
    let mut rows = Vec::new();
    for (run, (db, servers)) in setups.into_iter().enumerate() {
        let mut running = Vec::new();
        for s in 0..servers {
            let mut cfg = crate::meta::MetaConfig::new(tmp.path().join(format!("meta-{run}-{s}")));
            cfg.db = db.map(str::to_string);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            running.push(crate::meta::start(listener, cfg).await?);
        }
        let (appkey, appid) = crate::meta::create_app(running[0].meta.db(), None)?;
        let bases: Vec<String> = running
            .iter()
            .map(|m| format!("{}/v2/{appkey}/{appid}/1", m.url))
            .collect();
        // Listings are read under `metadata/`, as nginx-tfs serves them.
        let listing = |base: &str| {
            base.replace(
                &format!("/v2/{appkey}/"),
                &format!("/v2/{appkey}/metadata/"),
            )
        };
        for threads in [1, 4] {
            let dir = format!("/bench-{}-{run}-{threads}", std::process::id());
            let h = reqwest::Client::new();
            let made = h
                .post(format!("{}/dir{dir}?recursive=1", bases[0]))
                .send()
                .await?;
            anyhow::ensure!(made.status().is_success(), "mkdir: {}", made.status());
            let mut per_s = [0.0; 5];
            for (op, rate) in per_s.iter_mut().enumerate() {
                let started = Instant::now();
                let clients = (0..threads).map(|t| {
                    let base = &bases[t % servers];
                    let (h, list, base, dir) =
                        (h.clone(), listing(base), base.clone(), dir.clone());
                    tokio::spawn(
                        async move { meta_op_run(&h, &base, &list, &dir, op, t, ops).await },
                    )
                });
                for c in futures::future::join_all(clients).await {
                    c??;
                }
                *rate = (threads * ops) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            }
            rows.push(MetaOpsRow {
                engine: running[0].meta.db().engine(),
                servers,
                threads,
                per_s,
            });
        }
        for m in running {
            m.task.abort();
        }
    }
    Ok(rows)
}

/// One client's `n` operations of kind `op` on its files in `dir`; `base`
/// is the namespace's REST v2 root, `list` its listing root.
async fn meta_op_run(
    h: &reqwest::Client,
    base: &str,
    list: &str,
    dir: &str,
    op: usize,
    client: usize,
    n: usize,
) -> anyhow::Result<()> {
    for i in 0..n {
        let file = format!("{base}/file{dir}/c{client}-{i}");
        let moved = format!("{base}/file{dir}/m{client}-{i}");
        let r = match META_OPS[op] {
            "create" => h.post(&file).send().await?,
            "stat" => h.head(&file).send().await?,
            "rename" => {
                h.post(&moved)
                    .header(
                        crate::meta::MOVE_SOURCE_HEADER,
                        format!("{dir}/c{client}-{i}"),
                    )
                    .send()
                    .await?
            }
            "list" => h.get(format!("{list}/dir{dir}")).send().await?,
            _ => h.delete(&moved).send().await?,
        };
        anyhow::ensure!(
            r.status().is_success(),
            "{} {i}: {}",
            META_OPS[op],
            r.status()
        );
    }
    Ok(())
}

/// The `--meta-ops` table.
pub fn meta_ops_table(rows: &[MetaOpsRow]) -> String {
    let mut out = format!("{:<9} {:>7} {:>7}", "store", "servers", "threads");
    for op in META_OPS {
        out += &format!(" {:>9}", format!("{op}/s"));
    }
    for r in rows {
        out += &format!("\n{:<9} {:>7} {:>7}", r.engine, r.servers, r.threads);
        for v in r.per_s {
            out += &format!(" {v:>9.0}");
        }
    }
    out
}
