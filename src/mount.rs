//! `tfsfs mount`: the drive. Connects to a metadata server (or starts an
//! embedded cluster), opens the filesystem core, and serves it over FUSE
//! until Ctrl-C, SIGTERM or `umount`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fuser::{Config, MountOption, SessionACL};

use crate::client::meta::MetaClient;
use crate::client::provider::ShardClient;
use crate::cluster::Cluster;
use crate::codec::crypt::AccountKey;
use crate::config::AccountChoice;
use crate::fs::{Fs, FsConfig, RemoteBackend};
use crate::fuse::FuseFs;
use crate::transfer::{Progress, UploadOptions};

/// Shard requests slower than this count as failed.
const SHARD_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an unmount waits for uploads in flight.
const QUIESCE: Duration = Duration::from_secs(120);
/// The kernel's read-ahead on the drive, in KiB. FUSE offers 128 KiB and
/// clamps the filesystem's answer to it, so a sequential reader would send
/// 128 KiB requests one window at a time; this many keeps 1 MiB requests
/// (FUSE's largest) in flight ahead of it.
const READ_AHEAD_KIB: u32 = 8192;

#[derive(Debug, Clone)]
pub struct MountOptions {
    pub dir: PathBuf,
    /// Metadata server; none starts the embedded cluster.
    pub meta: Option<String>,
    pub appkey: Option<String>,
    /// Namespace uid; the saved account's, else 1, when not given.
    pub uid: Option<u64>,
    pub cache_dir: Option<PathBuf>,
    pub cache_size: u64,
    pub encrypt: bool,
    pub allow_other: bool,
    /// Mounted read-only: the kernel answers EROFS to every change.
    pub read_only: bool,
    /// Where the embedded cluster keeps its state.
    pub data_dir: PathBuf,
    pub providers: usize,
    pub threads: usize,
    /// Where the sidecar API listens, and its token; none: no sidecar.
    pub sidecar: Option<crate::sidecar::SidecarConfig>,
    /// Where `GET /metrics` is served; none: not served.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Runs the drive in this process until it is unmounted.
pub fn run(opts: MountOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    // Before the drive opens, so its first figures are kept.
    let _metrics = match opts.metrics {
        Some(addr) => Some(rt.block_on(serve_metrics(addr))?),
        None => None,
    };
    let (fs, _cluster, sidecar) = rt.block_on(open(&opts))?;
    let _sidecar = match opts.sidecar {
        Some(config) => rt
            .block_on(crate::sidecar::serve(config, sidecar))
            .map_err(|e| {
                tracing::warn!(error = %e, "no sidecar");
                eprintln!("warning: {e:#}; the drive runs without it (--sidecar ADDR picks another address)");
            })
            .ok(),
        None => None,
    };
    let fs = Arc::new(fs);
    // Uploads that failed because storage was unreachable are retried.
    rt.spawn(fs.clone().retry_failed_uploads());
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("tfsfs".into()),
        MountOption::Subtype("tfsfs".into()),
        MountOption::DefaultPermissions,
    ];
    if opts.read_only {
        config.mount_options.push(MountOption::RO);
    }
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let adapter = FuseFs::new(fs.clone(), rt.handle().clone());
    let mut session = fuser::Session::new(adapter, &opts.dir, &config)
        .with_context(|| format!("mount {}", opts.dir.display()))?;
    let mut unmounter = session.unmount_callable();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let serve = std::thread::spawn(move || {
        let r = session.run();
        let _ = done_tx.send(());
        r
    });
    // The kernel sets the read-ahead when it takes the INIT reply, which a
    // request on the mount waits for: widened before that, it would be
    // cut back to what INIT offered.
    let _ = std::fs::metadata(&opts.dir);
    if let Err(e) = widen_read_ahead(&opts.dir) {
        tracing::info!(error = %e, "kernel read-ahead left at its default");
    }
    eprintln!("tfsfs mounted at {}", opts.dir.display());
    let signalled = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Ok::<_, std::io::Error>(true),
            _ = term.recv() => Ok(true),
            _ = done_rx => Ok(false),
        }
    })?;
    if signalled {
        rt.block_on(fs.quiesce(QUIESCE));
        unmounter.unmount().context("unmount")?;
    }
    serve
        .join()
        .map_err(|_| anyhow::anyhow!("FUSE session panicked"))??;
    rt.block_on(fs.quiesce(QUIESCE));
    Ok(())
}

/// Serves `GET /metrics` on `addr` (the process's every series: in the
/// embedded cluster, meta's and the providers' too).
async fn serve_metrics(addr: std::net::SocketAddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    crate::metrics::install();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics: cannot listen on {addr}"))?;
    eprintln!("tfsfs metrics on http://{}/metrics", listener.local_addr()?);
    let app = axum::Router::new().route("/metrics", axum::routing::get(crate::metrics::scrape));
    Ok(tokio::spawn(async move {
        if let Err(e) = crate::http::serve(listener, app, crate::metrics::service("mount")).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    }))
}

/// Sets the mount's read-ahead through its backing device's sysfs entry
/// (root only), once the session serves: `stat` of the mount point waits
/// for it, and the kernel would clamp a value set before INIT.
fn widen_read_ahead(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir)?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    std::fs::write(
        format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"),
        READ_AHEAD_KIB.to_string(),
    )
}

/// Connects to storage and opens the filesystem core.
async fn open(
    opts: &MountOptions,
) -> anyhow::Result<(Fs<RemoteBackend>, Option<Cluster>, crate::sidecar::Sidecar)> {
    let choice =
        crate::config::choose_account(opts.meta.as_deref(), opts.appkey.as_deref(), opts.uid)?;
    let (meta_url, appkey, uid, cluster) = match choice {
        AccountChoice::Remote {
            meta_url,
            appkey,
            uid,
        } => (meta_url, appkey, uid, None),
        AccountChoice::Embedded { saved } => {
            let c = Cluster::start(
                &opts.data_dir.join("cluster"),
                opts.providers,
                "127.0.0.1:0",
                None,
            )
            .await?;
            let mine = match &saved {
                Some(s) if c.meta.meta.db().appid_of(&s.appkey)? == Some(s.appid) => {
                    Some((s.appkey.clone(), opts.uid.unwrap_or(s.uid)))
                }
                Some(s) => {
                    tracing::warn!(email = %s.email, "the saved account is not in the embedded cluster; using the cluster's own app");
                    None
                }
                None => None,
            };
            let (appkey, uid) =
                mine.unwrap_or_else(|| (c.info.appkey.clone(), opts.uid.unwrap_or(c.info.uid)));
            (c.info.meta_url.clone(), appkey, uid, Some(c))
        }
    };
    // How a verified account names this server: "" for the embedded cluster.
    let saved_meta_url = if cluster.is_some() {
        String::new()
    } else {
        meta_url.clone()
    };
    let meta = MetaClient::connect(&meta_url, &appkey, uid).await?;
    let account = if opts.encrypt {
        Some(AccountKey::derive(
            &crate::config::master_secret()?,
            meta.appid,
            meta.uid,
        ))
    } else {
        None
    };
    let server_key = meta.server_key().await?;
    let cache_dir = opts.cache_dir.clone().unwrap_or_else(|| {
        // One cache per metadata server (known by its key) and account.
        crate::config::cache_dir().join(format!(
            "{}-{}-{}",
            &server_key.get(..16).unwrap_or("x"),
            meta.appid,
            meta.uid
        ))
    });
    let progress = Progress::default();
    let shards = ShardClient::new(SHARD_TIMEOUT);
    // The sidecar shares the drive's account, clients and progress registry.
    let sidecar = crate::sidecar::Sidecar::new(
        meta.clone(),
        shards.clone(),
        account.clone(),
        progress.clone(),
        saved_meta_url,
    );
    let backend = RemoteBackend {
        meta,
        shards,
        account,
        progress,
        upload: UploadOptions::default(),
    };
    let cfg = FsConfig {
        cache_dir,
        cache_size: opts.cache_size as usize,
        prefetch: 4,
    };
    let fs = Fs::new(backend, cfg).await?;
    Ok((fs, cluster, sidecar))
}

/// Runs this same command again with `--foreground`, detached (its own
/// session, output to a log under the cache dir), and returns once DIR is
/// mounted or the child has failed.
pub fn detach(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let log_dir = crate::config::cache_dir();
    std::fs::create_dir_all(&log_dir)?;
    let log_path = log_dir.join("mount.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.push("--foreground".into());
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let target = std::fs::canonicalize(dir)?;
    for _ in 0..600 {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("mount failed ({status}); see {}", log_path.display());
        }
        if is_mounted(&target) {
            eprintln!(
                "tfsfs mounted at {} (pid {}, log {})",
                target.display(),
                child.id(),
                log_path.display()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!(
        "mount did not come up within a minute; see {}",
        log_path.display()
    )
}

/// Is a tfsfs file system mounted at `dir`?
pub fn is_mounted(dir: &std::path::Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines().any(|l| {
                l.split(' ').nth(1).map(std::path::Path::new) == Some(dir) && l.contains("tfsfs")
            })
        })
        .unwrap_or(false)
}
