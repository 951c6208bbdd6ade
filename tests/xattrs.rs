//! Extended attributes and POSIX ACLs on a real mount, with the real tools
//! (attr's setfattr/getfattr, acl's setfacl/getfacl, rsync -aX, cp -a) and
//! Linux's errors; ACLs enforced by the kernel for other users. Needs root
//! and /dev/fuse.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog} (apt packages attr, acl, rsync): {e}"));
    assert_ok(&out, &format!("{prog} {}", args.join(" ")));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn as_user(user: &str, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", user, "--"])
        .args(args)
        .output()
        .unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

/// getxattr(2) into a buffer of `size`: the length, or the errno.
fn getxattr(path: &Path, name: &str, size: usize) -> Result<(usize, Vec<u8>), i32> {
    let (path, name) = (c_path(path), CString::new(name).unwrap());
    let mut buf = vec![0u8; size];
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), size) };
    if n < 0 {
        return Err(last_errno());
    }
    buf.truncate(if size == 0 { 0 } else { n as usize });
    Ok((n as usize, buf))
}

fn setxattr(path: &Path, name: &str, value: &[u8], flags: i32) -> Result<(), i32> {
    let (path, name) = (c_path(path), CString::new(name).unwrap());
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    Ok(())
}

fn removexattr(path: &Path, name: &str) -> Result<(), i32> {
    let (path, name) = (c_path(path), CString::new(name).unwrap());
    if unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) } < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// listxattr(2): the names.
fn listxattr(path: &Path) -> Vec<String> {
    let path = c_path(path);
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr: errno {}", last_errno());
    buf.truncate(n as usize);
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

/// The user.* attributes of a file as getfattr dumps them (hex values).
fn user_attrs(path: &Path) -> String {
    run(
        "getfattr",
        &["-d", "-e", "hex", "--absolute-names", p(path)],
    )
    .lines()
    .filter(|l| l.starts_with("user."))
    .collect::<Vec<_>>()
    .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xattrs_round_trip_with_the_tools_and_travel_with_rsync_and_cp() {
    let c = TestCluster::start(4).await;
    let m = TestMount::new(&c);
    let f = m.path("f");
    std::fs::write(&f, b"data").unwrap();
    run("setfattr", &["-n", "user.color", "-v", "blue", p(&f)]);
    run("setfattr", &["-n", "user.bin", "-v", "0x00ff0a00", p(&f)]);
    run("setfattr", &["-n", "trusted.root", "-v", "1", p(&f)]);
    assert_eq!(
        run("getfattr", &["--only-values", "-n", "user.color", p(&f)]),
        "blue"
    );
    assert_eq!(getxattr(&f, "user.bin", 64).unwrap().1, [0, 0xff, 0x0a, 0]);
    let mut names = listxattr(&f);
    names.sort();
    assert_eq!(names, ["trusted.root", "user.bin", "user.color"]);

    // A hard link shares them: they are the file's.
    std::fs::hard_link(&f, m.path("g")).unwrap();
    assert_eq!(
        run(
            "getfattr",
            &["--only-values", "-n", "user.color", p(&m.path("g"))]
        ),
        "blue"
    );

    // cp -a within the drive, rsync -aX out of it and back in.
    let want = user_attrs(&f);
    assert!(want.contains("user.bin=0x00ff0a00"), "{want}");
    run("cp", &["-a", p(&f), p(&m.path("copy"))]);
    assert_eq!(user_attrs(&m.path("copy")), want, "cp -a");
    let local = tempfile::tempdir().unwrap();
    let out = local.path().join("f");
    run("rsync", &["-aX", p(&f), p(&out)]);
    assert_eq!(user_attrs(&out), want, "rsync -aX out");
    run("rsync", &["-aX", p(&out), p(&m.path("back"))]);
    assert_eq!(user_attrs(&m.path("back")), want, "rsync -aX in");

    // Removed: gone from the list.
    run("setfattr", &["-x", "user.color", p(&f)]);
    let mut names = listxattr(&f);
    names.sort();
    assert_eq!(names, ["trusted.root", "user.bin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xattr_calls_answer_linux_errors() {
    let c = TestCluster::start(4).await;
    let m = TestMount::with_args(&c, true, &["-o", "allow_other"]);
    let f = m.path("f");
    std::fs::write(&f, b"data").unwrap();
    assert_eq!(getxattr(&f, "user.none", 64), Err(libc::ENODATA));
    setxattr(&f, "user.k", b"twelve bytes", 0).unwrap();
    assert_eq!(getxattr(&f, "user.k", 0).unwrap().0, 12, "size probe");
    assert_eq!(getxattr(&f, "user.k", 4), Err(libc::ERANGE), "small buffer");
    assert_eq!(
        setxattr(&f, "user.k", b"x", libc::XATTR_CREATE),
        Err(libc::EEXIST)
    );
    assert_eq!(
        setxattr(&f, "user.new", b"x", libc::XATTR_REPLACE),
        Err(libc::ENODATA)
    );
    setxattr(&f, "user.k", b"replaced", libc::XATTR_REPLACE).unwrap();
    assert_eq!(getxattr(&f, "user.k", 64).unwrap().1, b"replaced");
    setxattr(&f, "user.big", &vec![7u8; 64 << 10], 0).unwrap();
    assert_eq!(getxattr(&f, "user.big", 64 << 10).unwrap().0, 64 << 10);
    assert_eq!(
        setxattr(&f, "user.big", &vec![7u8; (64 << 10) + 1], 0),
        Err(libc::E2BIG)
    );
    assert_eq!(setxattr(&f, "unknown.k", b"x", 0), Err(libc::EOPNOTSUPP));
    assert_eq!(removexattr(&f, "user.none"), Err(libc::ENODATA));
    removexattr(&f, "user.k").unwrap();
    assert_eq!(getxattr(&f, "user.k", 64), Err(libc::ENODATA));

    // trusted.* is root's.
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let out = as_user("nobody", &["setfattr", "-n", "trusted.x", "-v", "1", p(&f)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{out:?}"
    );
    setxattr(&f, "trusted.x", b"1", 0).unwrap();
    assert_eq!(getxattr(&f, "trusted.x", 8).unwrap().1, b"1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posix_acls_round_trip_are_enforced_and_inherited() {
    let c = TestCluster::start(4).await;
    let m = TestMount::with_args(&c, true, &["-o", "allow_other"]);
    let dir = m.path("shared");
    std::fs::create_dir(&dir).unwrap();
    let f = dir.join("f");
    std::fs::write(&f, b"secret").unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    for user in ["nobody", "daemon"] {
        assert_ok(&as_user(user, &["cat", p(&f)]), "readable before the ACL");
    }

    run("setfacl", &["-m", "u:nobody:---", p(&f)]);
    let acl = run("getfacl", &["-c", p(&f)]);
    assert!(acl.contains("user:nobody:---"), "{acl}");
    assert!(acl.contains("mask::r--"), "{acl}");
    let out = as_user("nobody", &["cat", p(&f)]);
    assert!(!out.status.success(), "nobody is refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    let out = as_user("daemon", &["cat", p(&f)]);
    assert_ok(&out, "daemon is not listed");
    assert_eq!(out.stdout, b"secret");

    // chmod moves the mask; the mode follows the ACL.
    run("setfacl", &["-m", "u:daemon:rwx", p(&f)]);
    run("chmod", &["640", p(&f)]);
    let acl = run("getfacl", &["-c", p(&f)]);
    assert!(acl.contains("mask::r--"), "chmod 640 sets the mask: {acl}");
    assert!(acl.contains("other::---"), "{acl}");
    assert_ok(
        &as_user("daemon", &["cat", p(&f)]),
        "daemon through the mask",
    );
    assert!(
        !as_user("daemon", &["sh", "-c", &format!("echo x >> {}", p(&f))])
            .status
            .success()
    );

    // A default ACL is inherited by what is made below.
    run("setfacl", &["-d", "-m", "u:daemon:rwx", p(&dir)]);
    std::fs::write(dir.join("new"), b"n").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    let acl = run("getfacl", &["-c", p(&dir.join("new"))]);
    assert!(
        acl.contains("user:daemon:rwx"),
        "a new file inherits: {acl}"
    );
    let acl = run("getfacl", &["-c", p(&dir.join("sub"))]);
    assert!(
        acl.contains("default:user:daemon:rwx"),
        "a new directory inherits the default: {acl}"
    );
}

/// What `sh -c script` prints, run in `dir`.
fn sh_in(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .current_dir(dir)
        .args(["-c", script])
        .output()
        .unwrap();
    assert_ok(&out, script);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The mode of a file `sh` makes under `umask` with `> name` (O_CREAT
/// without O_EXCL): while the shell still holds it open, and after.
fn made_under_umask(dir: &Path, umask: &str, name: &str) -> String {
    sh_in(
        dir,
        &format!("umask {umask} && exec 3> {name} && stat -c %a {name} && exec 3>&- && stat -c %a {name}"),
    )
}

/// As on a local disk: the umask shapes a new node's mode, unless its
/// directory has a default ACL, whose entries set it instead; and a new
/// file shows that mode from its create, before its first commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_acl_not_the_umask_sets_a_new_files_mode_from_its_create() {
    let c = TestCluster::start(4).await;
    let m = TestMount::new(&c);
    let plain = m.path("plain");
    std::fs::create_dir(&plain).unwrap();
    assert_eq!(made_under_umask(&plain, "027", "f"), "640\n640\n");
    let made = sh_in(&plain, "umask 027 && mkdir d && mkfifo p && stat -c %a d p");
    assert_eq!(made, "750\n640\n");

    let acl = m.path("acl");
    std::fs::create_dir(&acl).unwrap();
    run("setfacl", &["-d", "-m", "u::rw-,g::rw-,o::---", p(&acl)]);
    // umask 077 would leave 600; the default ACL grants the group rw.
    assert_eq!(made_under_umask(&acl, "077", "f"), "660\n660\n");
    run("setfacl", &["-d", "-m", "u::rw-,g::r--,o::---", p(&acl)]);
    assert_eq!(made_under_umask(&acl, "022", "g"), "640\n640\n");
    // mkdir asks 0777; the default ACL's entries grant no x.
    assert_eq!(sh_in(&acl, "umask 077 && mkdir d && stat -c %a d"), "640\n");
    // Gone again: the umask is back.
    run("setfacl", &["-k", p(&acl)]);
    assert_eq!(made_under_umask(&acl, "077", "h"), "600\n600\n");
}
