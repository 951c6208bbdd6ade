//! `tfsfs`: the one binary. See README.md for the commands.

use std::io::IsTerminal;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};

use tfsfs::client::meta::MetaClient;
use tfsfs::client::provider::ShardClient;
use tfsfs::codec::crypt::AccountKey;
use tfsfs::meta::{self, Limits, MetaConfig};
use tfsfs::provider::{self, ProviderConfig};
use tfsfs::transfer::{self, Progress, UploadOptions};

// jemalloc keeps freed partition and shard buffers for reuse; glibc's
// malloc hands multi-MiB buffers back to the kernel, and every new one
// faulted in zeroed pages (15% of a big write's CPU in perf).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "tfsfs",
    version,
    about = "A network drive: encrypted, erasure-coded, spread over many providers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure a mounted drive beside a local directory.
    Bench(BenchArgs),
    /// Mount the drive at DIR (with no --meta, on an embedded local cluster).
    Mount(MountArgs),
    /// Run the metadata server (TFS v1/v2 REST, upload sessions, placement).
    Meta(MetaArgs),
    /// Run a storage provider (content-addressed shard store).
    Provider(ProviderArgs),
    /// Run a metadata server and N providers on loopback; writes DIR/cluster.json.
    Cluster {
        #[arg(long)]
        data: PathBuf,
        /// The metadata store in PostgreSQL (as `meta --db`).
        #[arg(long)]
        db: Option<String>,
        #[arg(long, default_value_t = 6)]
        providers: usize,
        /// Address of the metadata server.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Administer a metadata server's store.
    Admin {
        #[arg(long)]
        data: PathBuf,
        /// The server's PostgreSQL store (as `meta --db`).
        #[arg(long)]
        db: Option<String>,
        #[command(subcommand)]
        what: AdminCommand,
    },
    /// Register an account by e-mail: a 6-digit code is mailed to it.
    Register {
        #[arg(long, env = "TFSFS_META")]
        meta: String,
        email: String,
        /// Ask for a new code for a pending registration.
        #[arg(long)]
        resend: bool,
    },
    /// Verify a registration with the mailed code; the account is saved to
    /// the config dir, where `mount` and the client commands find it.
    Verify {
        #[arg(long, env = "TFSFS_META")]
        meta: String,
        email: String,
        code: String,
    },
    /// Upload a local file to REMOTE (a path in the namespace).
    Put {
        #[command(flatten)]
        client: ClientArgs,
        local: PathBuf,
        remote: String,
    },
    /// Download REMOTE to a local file.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        remote: String,
        local: PathBuf,
    },
    /// List a directory of the namespace.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(default_value = "/")]
        remote: String,
    },
    /// Remove a file (or an empty directory with --dir).
    Rm {
        #[command(flatten)]
        client: ClientArgs,
        remote: String,
        #[arg(long)]
        dir: bool,
    },
}

#[derive(Args)]
struct BenchArgs {
    /// A directory on the mounted drive.
    #[arg(required_unless_present = "meta_ops")]
    dir: Option<PathBuf>,
    /// Measure metadata operations per second (create, stat, rename, list,
    /// delete) on in-process metadata servers instead: SQLite, and with
    /// --db PostgreSQL with one and two servers.
    #[arg(long)]
    meta_ops: bool,
    /// The PostgreSQL database for --meta-ops.
    #[arg(long)]
    db: Option<String>,
    /// Operations of each kind per client thread, for --meta-ops.
    #[arg(long, default_value_t = 500)]
    ops: usize,
    /// The local-disk baseline directory (default: a temporary one).
    #[arg(long)]
    local: Option<PathBuf>,
    #[arg(long, default_value_t = 1 << 30)]
    big_size: u64,
    #[arg(long, default_value_t = 1 << 20)]
    io_size: usize,
    #[arg(long, default_value_t = 1000)]
    small_count: usize,
    #[arg(long, default_value_t = 4096)]
    small_size: usize,
    /// The mount's pid, for its peak RSS (found by its command line if absent).
    #[arg(long)]
    pid: Option<u32>,
}

#[derive(Args)]
struct MountArgs {
    dir: PathBuf,
    /// Without --meta (and no saved account) an embedded cluster (meta + 6
    /// providers) starts.
    #[command(flatten)]
    client: ClientArgs,
    /// Staging and cache directory (default $XDG_CACHE_HOME/tfsfs/...).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Bytes of decoded data kept in memory.
    #[arg(long, default_value_t = 512 << 20)]
    cache_size: u64,
    /// Mount options: `allow_other` lets other users in, `ro` mounts
    /// read-only; `-o key=value,flag` also sets `--key value --flag` (the
    /// form mount(8) and /etc/fstab use).
    #[arg(short = 'o')]
    options: Vec<String>,
    /// Stay in the foreground (otherwise detach once mounted).
    #[arg(long)]
    foreground: bool,
    /// State of the embedded cluster (default $XDG_DATA_HOME/tfsfs).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 6)]
    providers: usize,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Address of the sidecar API (client-api.md). On loopback it serves
    /// only this user and root; any other address needs --sidecar-token-file.
    #[arg(long, default_value = "127.0.0.1:7788")]
    sidecar: std::net::SocketAddr,
    /// A file whose first line is the token every sidecar request must
    /// carry (`Authorization: Bearer TOKEN`).
    #[arg(long)]
    sidecar_token_file: Option<PathBuf>,
    /// Do not start the sidecar API.
    #[arg(long)]
    no_sidecar: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
enum AdminCommand {
    App {
        #[command(subcommand)]
        what: AppCommand,
    },
    /// The packages accounts can buy.
    Package {
        #[command(subcommand)]
        what: PackageCommand,
    },
    /// Storage providers: who may join, their state, drain and removal.
    Provider {
        #[command(subcommand)]
        what: ProviderCommand,
    },
    /// Partitions by redundancy, the repair queue, and every provider with
    /// its last scrub (as the running server classifies them).
    Health {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ProviderCommand {
    /// Print a join token: `tfsfs provider --join TOKEN` enrolls a new
    /// provider with it (once, unless --reusable).
    Token {
        /// Let any number of providers join with it until it expires.
        #[arg(long)]
        reusable: bool,
        /// Seconds the token stays valid.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
    },
    /// Every provider: id, url, state, alive, capacity, used, shards, last seen.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop placing shards on a provider; repair moves every shard off it,
    /// then it is retired.
    Drain { id: String },
    /// Place shards on a drained (or draining) provider again.
    Undrain { id: String },
    /// Forget a provider: refused while it holds the only copy of a shard.
    Remove {
        id: String,
        /// Remove even so (its unique shards are then lost).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum PackageCommand {
    /// Add a package; prints it as JSON.
    Add {
        #[arg(long)]
        name: String,
        /// Bytes per unit, with an optional K, M, G or T suffix (powers of 1024).
        #[arg(long, value_parser = parse_size)]
        capacity: u64,
        /// How long an order lasts, in days.
        #[arg(long)]
        days: u64,
        /// Price per unit, in cents.
        #[arg(long)]
        price: u64,
    },
    /// List packages as JSON (retired ones too with --all).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Change a package; orders already made keep what they bought.
    Set {
        id: i64,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_parser = parse_size)]
        capacity: Option<u64>,
        #[arg(long)]
        days: Option<u64>,
        #[arg(long)]
        price: Option<u64>,
        /// Sell it again (after `remove`).
        #[arg(long)]
        active: Option<bool>,
    },
    /// Retire a package: no longer sold; active orders stay valid.
    Remove { id: i64 },
}

/// `123`, `64K`, `100M`, `2G`, `1T` (also `1GiB`, `1GB`): powers of 1024.
fn parse_size(raw: &str) -> Result<u64, String> {
    let s = raw.trim();
    let s = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s);
    let (num, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                'P' => 50,
                _ => return Err(format!("{raw:?}: unknown unit {c:?}")),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{raw:?} is not a size"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{raw:?} is too large"))
}

#[derive(Subcommand)]
enum AppCommand {
    /// Create an app; prints {"appkey":..,"appid":..}.
    Create {
        /// Keep an existing appkey (for apps moving from TFS).
        #[arg(long)]
        appkey: Option<String>,
    },
}

#[derive(Args)]
struct MetaArgs {
    #[arg(long, default_value = "127.0.0.1:7500")]
    listen: String,
    #[arg(long)]
    data: PathBuf,
    /// Keep the store in PostgreSQL (postgres://user@host:port/db), shared
    /// by every metadata server given the same URL; default SQLite in --data.
    #[arg(long)]
    db: Option<String>,
    /// The key file for mailed codes (made 0600 when missing); give every
    /// server of one store the same file. Default: DATA/secret.key.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Any app may read any namespace (TFS's open behaviour).
    #[arg(long)]
    public_read: bool,
    #[arg(long, default_value_t = tfsfs::codec::DEFAULT_PARTITION_SIZE)]
    partition_size: u64,
    /// Objects up to this many stored bytes are replicated, larger ones erasure-coded.
    #[arg(long, default_value_t = 1 << 20)]
    replica_max: u64,
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    #[arg(short, long, default_value_t = 4)]
    k: usize,
    #[arg(short, long, default_value_t = 2)]
    m: usize,
    #[arg(long, default_value_t = 15)]
    provider_timeout_secs: u64,
    /// Bytes each account may store (its free tier).
    #[arg(long, default_value_t = 100 << 30)]
    free_capacity: u64,
    /// Seconds between garbage collections of unused objects.
    #[arg(long, default_value_t = 30)]
    gc_interval_secs: u64,
    /// Seconds an object stays unused before it is collected (as long as a
    /// read grant lives, so a reader of a replaced version can finish).
    #[arg(long, default_value_t = 600)]
    gc_grace_secs: u64,
    /// How far providers' clocks may lag this server's: shard copies stored
    /// less than this before their deletion was decided wait for a later round.
    #[arg(long, default_value_t = 120)]
    clock_skew_secs: u64,
    /// An upload session not finished within this time is refused.
    #[arg(long, default_value_t = 3600)]
    session_ttl_secs: u64,
    /// Lifetime of the grants handed to clients for provider reads and
    /// writes (a mount renews a long-open file's read grants).
    #[arg(long, default_value_t = 600)]
    grant_ttl_secs: u64,
    #[arg(long, default_value_t = 100_000)]
    max_subdirs: u64,
    #[arg(long, default_value_t = 1_000_000)]
    max_files: u64,
    /// SMTP server for registration mail: smtp://[user:pass@]host[:port]
    /// (plain SMTP; use a local relay for TLS). Without it, mail is written
    /// to DATA/outbox and logged.
    #[arg(long)]
    smtp: Option<String>,
    /// Sender of registration mail.
    #[arg(long, default_value = "tfsfs <noreply@localhost>")]
    mail_from: String,
    /// How long a mailed registration code is accepted.
    #[arg(long, default_value_t = 900)]
    code_ttl_secs: u64,
    /// Wrong codes accepted before a code is void.
    #[arg(long, default_value_t = 5)]
    code_attempts: u32,
    /// Least time between two codes mailed to one address.
    #[arg(long, default_value_t = 60)]
    resend_interval_secs: u64,
    /// Codes mailed to one address per day at most.
    #[arg(long, default_value_t = 20)]
    codes_per_day: u32,
    /// Registration mails per hour at most for one client address (IPv6:
    /// one /64).
    #[arg(long, default_value_t = NonZeroU32::new(20).expect("not zero"))]
    registrations_per_ip: NonZeroU32,
    /// Largest file in bytes: REST writes and uploads past it are refused.
    #[arg(long, default_value_t = 1 << 40)]
    max_file_size: u64,
    /// Seconds to receive a request's head; also how long an idle
    /// keep-alive connection is kept.
    #[arg(long, default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds a request body may send nothing before it fails (408).
    #[arg(long, default_value_t = 30)]
    body_timeout_secs: u64,
    /// A provider silent this long has its shards rebuilt elsewhere.
    #[arg(long, default_value_t = 1800)]
    repair_after_secs: u64,
    /// Repair bandwidth in MiB/s (shard bytes read plus written; 0: unbounded).
    #[arg(long, default_value_t = 50.0)]
    repair_rate: f64,
    /// Partitions repaired at once.
    #[arg(long, default_value_t = 4)]
    repair_parallel: usize,
    /// Seconds between repair rounds (also the first backoff of a failed repair).
    #[arg(long, default_value_t = 10)]
    repair_interval_secs: u64,
    /// Placed shard copies the verifier checks (HEAD) per second: finds
    /// shard files deleted or truncated on a provider's disk.
    #[arg(long, default_value_t = 50)]
    verify_rate: u64,
}

#[derive(Args)]
struct ProviderArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    meta: String,
    /// Capacity to announce (bytes); the disk's size by default.
    #[arg(long)]
    capacity: Option<u64>,
    #[arg(long, default_value_t = 2)]
    heartbeat_secs: u64,
    /// Join token from `tfsfs admin provider token` (first start only).
    #[arg(long, env = "TFSFS_JOIN_TOKEN")]
    join: Option<String>,
    /// Scrub read rate in MiB/s (0: unbounded).
    #[arg(long, default_value_t = 8.0)]
    scrub_rate: f64,
    /// Seconds between scrub passes (each hashes every shard again).
    #[arg(long, default_value_t = 86_400)]
    scrub_interval_secs: u64,
}

#[derive(Args)]
/// The account a client acts for: server, app key, uid, and whether it
/// encrypts. Shared by `mount` and the file commands.
struct ClientArgs {
    /// Metadata server (default: the saved account's).
    #[arg(long, env = "TFSFS_META")]
    meta: Option<String>,
    /// The app's key (default: the saved account's, for its server).
    /// Prefer TFSFS_APPKEY: other users see a command line.
    #[arg(long, env = "TFSFS_APPKEY")]
    appkey: Option<String>,
    /// Namespace uid (default: the saved account's, else 1).
    #[arg(long, env = "TFSFS_UID")]
    uid: Option<u64>,
    /// Store plaintext (readable through the REST API).
    #[arg(long)]
    no_encrypt: bool,
}

impl ClientArgs {
    async fn connect(&self) -> anyhow::Result<(MetaClient, Option<AccountKey>)> {
        let choice =
            tfsfs::config::choose_account(self.meta.as_deref(), self.appkey.as_deref(), self.uid)?;
        let tfsfs::config::AccountChoice::Remote {
            meta_url: url,
            appkey,
            uid,
        } = choice
        else {
            anyhow::bail!("--meta (or TFSFS_META) is needed: no account is saved");
        };
        let meta = MetaClient::connect(&url, &appkey, uid).await?;
        let acct = if self.no_encrypt {
            None
        } else {
            Some(AccountKey::derive(
                &tfsfs::config::master_secret()?,
                meta.appid,
                meta.uid,
            ))
        };
        Ok((meta, acct))
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,fuser::session=error")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    // Built, so clap's own `help` subcommand is known too.
    let mut command = Cli::command();
    command.build();
    let is_subcommand = |name: &str| command.find_subcommand(name).is_some();
    let args = tfsfs::fstab::expand(std::env::args().collect(), is_subcommand);
    let cli = Cli::parse_from(args);
    if let Command::Mount(m) = cli.command {
        return mount(m);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli.command))
}

async fn bench(a: BenchArgs) -> anyhow::Result<()> {
    use tfsfs::bench;
    let Some(dir) = a.dir.clone().filter(|_| !a.meta_ops) else {
        let rows = bench::meta_ops(a.db.as_deref(), a.ops.max(1)).await?;
        println!("{}", bench::meta_ops_table(&rows));
        return Ok(());
    };
    let o = bench::BenchOptions {
        big_size: a.big_size,
        io_size: a.io_size,
        small_count: a.small_count,
        small_size: a.small_size,
        pid: a.pid.or_else(|| bench::find_mount_pid(&dir)),
    };
    let pid = o.pid;
    let tmp = tempfile_dir()?;
    let local_dir = a.local.clone().unwrap_or_else(|| tmp.clone());
    eprintln!("measuring {} ...", dir.display());
    let drive = bench::measure(&dir, &o)?;
    eprintln!("measuring {} (local disk) ...", local_dir.display());
    let local = bench::measure(&local_dir, &bench::BenchOptions { pid: None, ..o })?;
    let _ = std::fs::remove_dir_all(&tmp);
    println!("{}", bench::table(&drive, &local));
    match pid.and_then(bench::peak_rss) {
        Some(rss) => println!(
            "mount peak RSS: {} MiB (pid {})",
            rss >> 20,
            pid.unwrap_or_default()
        ),
        None => println!("mount peak RSS: unknown (pass --pid)"),
    }
    Ok(())
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> std::io::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("tfsfs-bench-local-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn mount(a: MountArgs) -> anyhow::Result<()> {
    let (mut allow_other, mut read_only) = (false, false);
    for opt in a.options.iter().flat_map(|o| o.split(',')) {
        match opt {
            "allow_other" => allow_other = true,
            "ro" => read_only = true,
            "" => {}
            other => anyhow::bail!(
                "unknown mount option {other:?} (known: {})",
                tfsfs::fstab::KERNEL.join(", ")
            ),
        }
    }
    // Checked before detaching, so a wrong flag is seen.
    let sidecar = if a.no_sidecar {
        None
    } else {
        Some(tfsfs::sidecar::SidecarConfig::new(
            a.sidecar,
            a.sidecar_token_file.as_deref(),
        )?)
    };
    if !a.foreground {
        return tfsfs::mount::detach(&a.dir);
    }
    tfsfs::mount::run(tfsfs::mount::MountOptions {
        dir: a.dir,
        meta: a.client.meta,
        appkey: a.client.appkey,
        uid: a.client.uid,
        cache_dir: a.cache_dir,
        cache_size: a.cache_size,
        encrypt: !a.client.no_encrypt,
        allow_other,
        read_only,
        data_dir: a.data.unwrap_or_else(tfsfs::config::data_dir),
        providers: a.providers,
        threads: a.threads,
        sidecar,
        metrics: a.metrics,
    })
}

/// A shard request slower than this counts as failed (a stalled provider).
const SHARD_TIMEOUT: Duration = Duration::from_secs(20);

/// Says where a server listens, on stdout, for scripts and tests.
fn announce(url: &str) {
    println!("LISTENING {url}");
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Mount(_) => unreachable!("handled before the runtime starts"),
        Command::Bench(a) => bench(a).await?,
        Command::Meta(a) => {
            let mut cfg = MetaConfig::new(a.data);
            cfg.db = a.db;
            cfg.secret_file = a.secret_file;
            cfg.public_read = a.public_read;
            cfg.partition_size = a.partition_size;
            cfg.replica_max = a.replica_max.min(a.partition_size);
            cfg.replicas = a.replicas.max(1);
            cfg.k = a.k.max(1);
            cfg.m = a.m;
            cfg.provider_timeout = Duration::from_secs(a.provider_timeout_secs);
            cfg.free_capacity = a.free_capacity;
            cfg.gc_interval = Duration::from_secs(a.gc_interval_secs.max(1));
            cfg.gc_grace = Duration::from_secs(a.gc_grace_secs);
            cfg.clock_skew = Duration::from_secs(a.clock_skew_secs);
            cfg.session_ttl = Duration::from_secs(a.session_ttl_secs);
            cfg.grant_ttl = Duration::from_secs(a.grant_ttl_secs.max(1));
            cfg.smtp = a.smtp;
            cfg.mail_from = a.mail_from;
            cfg.code_ttl = Duration::from_secs(a.code_ttl_secs.max(1));
            cfg.code_attempts = a.code_attempts.max(1);
            cfg.resend_interval = Duration::from_secs(a.resend_interval_secs);
            cfg.codes_per_day = a.codes_per_day.max(1);
            cfg.registrations_per_ip = a.registrations_per_ip;
            cfg.max_file_size = a.max_file_size;
            cfg.serve = tfsfs::http::ServeConfig {
                header_read: Duration::from_secs(a.header_timeout_secs.max(1)),
                body_read: Duration::from_secs(a.body_timeout_secs.max(1)),
            };
            cfg.repair_after = Duration::from_secs(a.repair_after_secs);
            cfg.repair_rate = mib_per_s(a.repair_rate);
            cfg.repair_parallel = a.repair_parallel.max(1);
            cfg.repair_interval = Duration::from_secs(a.repair_interval_secs.max(1));
            cfg.verify_rate = a.verify_rate;
            cfg.limits = Limits {
                max_subdirs: a.max_subdirs,
                max_files: a.max_files,
            };
            let listener = tokio::net::TcpListener::bind(&a.listen)
                .await
                .with_context(|| format!("bind {}", a.listen))?;
            let running = meta::start(listener, cfg).await?;
            announce(&running.url);
            tokio::signal::ctrl_c().await?;
        }
        Command::Provider(a) => {
            let listener = tokio::net::TcpListener::bind(&a.listen)
                .await
                .with_context(|| format!("bind {}", a.listen))?;
            let cfg = ProviderConfig {
                data: a.data,
                meta: a.meta.trim_end_matches('/').to_string(),
                capacity: a.capacity,
                heartbeat: Duration::from_secs(a.heartbeat_secs.max(1)),
                max_shard: 256 << 20,
                join: a.join,
                scrub_rate: mib_per_s(a.scrub_rate),
                scrub_interval: Duration::from_secs(a.scrub_interval_secs.max(1)),
            };
            let running = provider::start(listener, cfg).await?;
            announce(&running.url);
            tokio::signal::ctrl_c().await?;
        }
        Command::Cluster {
            data,
            db,
            providers,
            listen,
        } => {
            let mut cfg = MetaConfig::new(data.join("meta"));
            cfg.db = db;
            let cluster =
                tfsfs::cluster::Cluster::start(&data, providers, &listen, Some(cfg)).await?;
            announce(&cluster.info.meta_url);
            println!("{}", serde_json::to_string_pretty(&cluster.info)?);
            eprintln!(
                "cluster running; details in {}; Ctrl-C stops it",
                data.join("cluster.json").display()
            );
            tokio::signal::ctrl_c().await?;
        }
        Command::Admin {
            data,
            db,
            what:
                AdminCommand::App {
                    what: AppCommand::Create { appkey },
                },
        } => {
            let db = tfsfs::meta::Db::open_or_connect(db.as_deref(), &data)?;
            let (appkey, appid) = meta::create_app(&db, appkey)?;
            println!(
                "{}",
                serde_json::json!({ "appkey": appkey, "appid": appid })
            );
        }
        Command::Admin {
            data,
            db,
            what: AdminCommand::Package { what },
        } => admin_package(&data, db.as_deref(), what)?,
        Command::Admin {
            data,
            db,
            what: AdminCommand::Provider { what },
        } => admin_provider(&data, db.as_deref(), what)?,
        Command::Admin {
            data,
            db,
            what: AdminCommand::Health { json },
        } => {
            let (db, h, replicas) = admin_store(&data, db.as_deref())?;
            let r = db.health_report(h, replicas)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "partitions: {} ({} full redundancy, {} degraded, {} one loss from data loss, {} lost)",
                    r.partitions, r.full, r.degraded, r.one_from_loss, r.lost
                );
                println!(
                    "repair queue: {} partitions ({} waiting after a failure)",
                    r.repair_queue, r.repair_backoff
                );
                print_providers(&r.providers);
            }
        }
        Command::Register {
            meta,
            email,
            resend,
        } => {
            let base = meta.trim_end_matches('/');
            let sent =
                tfsfs::client::account::register(&reqwest::Client::new(), base, &email, resend)
                    .await?;
            println!("{}", serde_json::to_string(&sent)?);
            eprintln!(
                "a code was mailed to {}; run: tfsfs verify {} CODE",
                sent.email, sent.email
            );
        }
        Command::Verify { meta, email, code } => {
            let base = meta.trim_end_matches('/');
            let c = tfsfs::client::account::verify(&reqwest::Client::new(), base, &email, &code)
                .await?;
            let path = tfsfs::config::save_account(&tfsfs::config::SavedAccount {
                meta_url: base.to_string(),
                email: c.email.clone(),
                appkey: c.appkey.clone(),
                appid: c.appid,
                uid: c.uid,
            })?;
            println!(
                "{}",
                serde_json::json!({ "email": c.email, "appkey": c.appkey, "appid": c.appid,
                                    "uid": c.uid, "saved": path })
            );
        }
        Command::Put {
            client,
            local,
            remote,
        } => {
            let (meta, acct) = client.connect().await?;
            let progress = Progress::default();
            let bar = show_progress(&progress, &remote);
            let shards = ShardClient::new(SHARD_TIMEOUT);
            let r = transfer::upload_file(
                &meta,
                &shards,
                acct.as_ref(),
                &local,
                &remote,
                &UploadOptions::default(),
                &progress,
            )
            .await;
            bar.abort();
            let ver = r?.ver_no;
            eprintln!("stored {} as {remote} (version {ver})", local.display());
        }
        Command::Get {
            client,
            remote,
            local,
        } => {
            let (meta, acct) = client.connect().await?;
            let entry = meta.store_entry(&remote).await?;
            let progress = Progress::default();
            let bar = show_progress(&progress, &entry.path);
            let shards = ShardClient::new(SHARD_TIMEOUT);
            let r =
                transfer::download_entry(&meta, &shards, acct.as_ref(), &entry, &local, &progress)
                    .await;
            bar.abort();
            r.with_context(|| {
                format!(
                    "cannot download {remote}; {} is left as it was",
                    local.display()
                )
            })?;
        }
        Command::Ls { client, remote } => {
            let (meta, _) = client.connect().await?;
            for e in meta.list_dir(&remote).await? {
                let kind = if e.is_file { '-' } else { 'd' };
                println!("{kind} {:>12} {}  {}", e.size, e.modify_time, e.name);
            }
        }
        Command::Rm {
            client,
            remote,
            dir,
        } => {
            let (meta, _) = client.connect().await?;
            if dir {
                meta.remove_dir(&remote).await?;
            } else {
                meta.remove_file(&remote).await?;
            }
        }
    }
    Ok(())
}

/// Bytes per second of a MiB/s flag.
fn mib_per_s(rate: f64) -> u64 {
    (rate.max(0.0) * (1 << 20) as f64) as u64
}

/// The store, and the horizons and replica count its server runs with.
fn admin_store(
    data: &std::path::Path,
    db: Option<&str>,
) -> anyhow::Result<(tfsfs::meta::Db, tfsfs::meta::store::Horizons, usize)> {
    let db = tfsfs::meta::Db::open_or_connect(db, data)?;
    let num = |key: &str, default: u64| -> anyhow::Result<u64> {
        Ok(db
            .config_get(key)?
            .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(default))
    };
    let now = tfsfs::grant::now_secs() as i64;
    let h = tfsfs::meta::store::Horizons {
        alive_since: now - num("provider_timeout_secs", 15)? as i64,
        lost_before: now - num("repair_after_secs", 1800)? as i64,
    };
    let replicas = num("replicas", 3)? as usize;
    Ok((db, h, replicas))
}

fn print_providers(ps: &[tfsfs::meta::store::ProviderReport]) {
    println!(
        "{:<20} {:<8} {:<5} {:>14} {:>14} {:>7} {:>10}  {:<24} scrub",
        "id", "state", "alive", "capacity", "used", "shards", "last seen", "url"
    );
    let now = tfsfs::grant::now_secs();
    for p in ps {
        let scrub = match &p.scrub {
            Some(s) => format!(
                "{} checked, {} bad, {}s ago",
                s.checked,
                s.bad,
                now.saturating_sub(s.last_pass)
            ),
            None => "never".into(),
        };
        println!(
            "{:<20} {:<8} {:<5} {:>14} {:>14} {:>7} {:>9}s  {:<24} {scrub}",
            p.id,
            p.state,
            p.alive,
            p.capacity,
            p.used,
            p.shards,
            now.saturating_sub(p.last_seen),
            p.url
        );
    }
}

fn admin_provider(
    data: &std::path::Path,
    db: Option<&str>,
    what: ProviderCommand,
) -> anyhow::Result<()> {
    use tfsfs::meta::store::{ACTIVE, DRAINING};
    let (db, h, _) = admin_store(data, db)?;
    match what {
        ProviderCommand::Token { reusable, ttl_secs } => {
            println!(
                "{}",
                meta::join_token(&db, reusable, Duration::from_secs(ttl_secs))?
            );
        }
        ProviderCommand::List { json } => {
            let ps = db.provider_reports(h.alive_since)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ps)?);
            } else {
                print_providers(&ps);
            }
        }
        ProviderCommand::Drain { id } => {
            anyhow::ensure!(db.provider_set_state(&id, DRAINING)?, "no provider {id}");
            eprintln!("provider {id} is draining: nothing new is placed on it, repair moves its shards off");
        }
        ProviderCommand::Undrain { id } => {
            anyhow::ensure!(db.provider_set_state(&id, ACTIVE)?, "no provider {id}");
        }
        ProviderCommand::Remove { id, force } => {
            let unique = db.unique_on(h, &id)?;
            anyhow::ensure!(
                unique == 0 || force,
                "provider {id} holds the only copy of {unique} shards; drain it first \
                 (`tfsfs admin provider drain {id}`) and wait until it is retired"
            );
            anyhow::ensure!(db.provider_remove(&id)?, "no provider {id}");
            eprintln!("provider {id} removed; it may join again only with a new token");
        }
    }
    Ok(())
}

fn admin_package(
    data: &std::path::Path,
    db: Option<&str>,
    what: PackageCommand,
) -> anyhow::Result<()> {
    use tfsfs::meta::store::PackageFields;
    let db = tfsfs::meta::Db::open_or_connect(db, data)?;
    // A store's first start creates the default packages; so does this.
    db.seed_packages(&meta::default_packages())?;
    let show = |p: &tfsfs::meta::store::PackageRow| {
        println!(
            "{}",
            serde_json::to_string(&meta::package_json(p)).unwrap_or_default()
        )
    };
    match what {
        PackageCommand::Add {
            name,
            capacity,
            days,
            price,
        } => show(&db.add_package(&PackageFields {
            name: Some(name),
            capacity: Some(capacity),
            duration_days: Some(days),
            price_cents: Some(price),
            active: Some(true),
        })?),
        PackageCommand::List { all } => db.packages(all)?.iter().for_each(show),
        PackageCommand::Set {
            id,
            name,
            capacity,
            days,
            price,
            active,
        } => show(&db.update_package(
            id,
            &PackageFields {
                name,
                capacity,
                duration_days: days,
                price_cents: price,
                active,
            },
        )?),
        PackageCommand::Remove { id } => show(&db.update_package(
            id,
            &PackageFields {
                active: Some(false),
                ..Default::default()
            },
        )?),
    }
    Ok(())
}

/// A progress bar on a terminal; nothing otherwise.
fn show_progress(progress: &Progress, name: &str) -> tokio::task::JoinHandle<()> {
    let (progress, name) = (progress.clone(), name.to_string());
    tokio::spawn(async move {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::new(1000);
        loop {
            let f = progress.snapshot().get(&name).copied().unwrap_or(0.0);
            bar.set_position((f * 1000.0) as u64);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}
