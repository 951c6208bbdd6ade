//! The drive mounted the way mount(8) and /etc/fstab do it: an fstab line
//! of type `fuse.tfsfs` (mount.fuse3 runs `tfsfs SOURCE DIR -o OPTS`), and
//! `mount -t fuse.tfsfs`; `umount` ends the mount process.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Installs this build as `/usr/local/bin/tfsfs` (a symbolic link): mount(8)
/// gives its helpers the default PATH, so the program must be installed.
fn install() {
    let at = Path::new("/usr/local/bin/tfsfs");
    if let Ok(meta) = at.symlink_metadata() {
        assert!(
            meta.file_type().is_symlink(),
            "{} is installed; the test will not replace it",
            at.display()
        );
        std::fs::remove_file(at).unwrap();
    }
    std::os::unix::fs::symlink(bin(), at).unwrap();
}

/// `mount ARGS` with the account in the environment, as an administrator's
/// shell or a systemd unit would have it.
fn mount(c: &TestCluster, home: &Path, args: &[&str]) -> std::process::Output {
    Command::new("mount")
        .args(args)
        .env("TFSFS_APPKEY", &c.appkey)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .output()
        .unwrap()
}

/// Whether a mount process still serves `dir` (its command line names
/// the directory in mount(8)'s form, which the detached process keeps).
fn serving(dir: &Path) -> bool {
    Command::new("pgrep")
        .args(["-f", &format!("tfsfs .* {} ", dir.display())])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// `umount DIR`, then the mount process must end on its own.
fn umount(dir: &Path) {
    assert!(serving(dir), "a mount process serves {}", dir.display());
    assert_ok(&Command::new("umount").arg(dir).output().unwrap(), "umount");
    let deadline = Instant::now() + Duration::from_secs(30);
    while serving(dir) {
        assert!(
            Instant::now() < deadline,
            "the mount process outlived umount"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!is_mounted(dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fstab_line_and_mount_t_fuse_tfsfs() {
    install();
    let c = TestCluster::start(6).await;
    let home = std::fs::canonicalize(c.dir.path()).unwrap();
    let (rw, ro) = (home.join("rw"), home.join("ro"));
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    // The metadata server as the source; drive options beside mount(8)'s
    // and systemd's, which the drive ignores.
    let fstab = home.join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "{} {} fuse.tfsfs rw,nosuid,nodev,_netdev,uid=1,cache_dir={},cache_size=67108864,no_sidecar,x-systemd.automount 0 0\n",
            c.meta.url,
            rw.display(),
            home.join("cache-rw").display()
        ),
    )
    .unwrap();
    let out = mount(
        &c,
        &home,
        &["--fstab", fstab.to_str().unwrap(), rw.to_str().unwrap()],
    );
    assert_ok(&out, "mount from the fstab line");
    assert!(is_mounted(&rw));
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(rw.to_str().unwrap()))
        .unwrap();
    assert!(line.starts_with("tfsfs "), "{line}");
    let data = random_bytes(3 << 20, 7);
    std::fs::write(rw.join("f"), &data).unwrap();

    // The same account, read-only, with the server in `meta=`.
    let opts = format!(
        "ro,meta={},uid=1,cache_dir={},no_sidecar",
        c.meta.url,
        home.join("cache-ro").display()
    );
    let out = mount(
        &c,
        &home,
        &[
            "-t",
            "fuse.tfsfs",
            "-o",
            &opts,
            "tfsfs",
            ro.to_str().unwrap(),
        ],
    );
    assert_ok(&out, "mount -t fuse.tfsfs");
    assert!(
        std::fs::read(ro.join("f")).unwrap() == data,
        "read back equal"
    );
    let e = std::fs::write(ro.join("g"), b"no").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = std::fs::remove_file(ro.join("f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");

    umount(&rw);
    umount(&ro);
    // What was written through the fstab mount is stored.
    let back = home.join("back");
    assert_ok(&c.get("/f", &back, true), "get");
    assert!(std::fs::read(&back).unwrap() == data);
}

#[test]
fn unknown_options_fail_with_a_clear_error() {
    let out = Command::new(bin())
        .args(["tfsfs", "/nonexistent-mnt", "-o", "rw,cache_sise=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cache-sise"), "{err}");
}

#[test]
fn help_of_a_subcommand_is_not_a_mount() {
    let out = Command::new(bin())
        .args(["help", "mount"])
        .output()
        .unwrap();
    assert_ok(&out, "tfsfs help mount");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: tfsfs mount"));
}
