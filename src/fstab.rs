//! The command lines mount(8) and `/etc/fstab` produce. For a
//! `fuse.tfsfs` entry, mount.fuse3 runs `tfsfs SOURCE DIR -o OPTIONS`; this
//! turns that, and `-o key=value` options given to `tfsfs mount`, into the
//! `tfsfs mount` flags they name, so one parser checks every option.

/// Options mount(8) and systemd pass that concern them, not the drive.
const IGNORED: &[&str] = &[
    "rw",
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "_netdev",
    "nofail",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "async",
    "sync",
];

/// Options the kernel mount itself takes (`tfsfs mount -o`).
pub const KERNEL: &[&str] = &["allow_other", "ro"];

/// Rewrites `args` (with the program name first) to the `tfsfs mount` form:
/// `tfsfs SOURCE DIR [-o OPTS]` becomes `tfsfs mount DIR [flags]` when
/// SOURCE is not a subcommand; a SOURCE that is a URL is the
/// metadata server (`--meta`). In every `-o` list of a mount, `key=value`
/// becomes `--key value` (underscores as dashes), a bare word `--word`,
/// kernel options stay `-o`, and mount(8)'s own options are dropped.
pub fn expand(args: Vec<String>, is_subcommand: impl Fn(&str) -> bool) -> Vec<String> {
    let Some(first) = args.get(1) else {
        return args;
    };
    let mut out = vec![args[0].clone()];
    let mut rest = args[1..].iter().cloned().peekable();
    if is_subcommand(first) || first.starts_with('-') {
        out.push(rest.next().expect("a first argument"));
        if first != "mount" {
            out.extend(rest);
            return out;
        }
    } else if args.len() >= 3 && !args[2].starts_with('-') {
        // mount.fuse3's form: SOURCE DIR.
        let source = rest.next().expect("a source");
        out.push("mount".into());
        out.push(rest.next().expect("a directory"));
        if source.contains("://") {
            out.extend(["--meta".into(), source]);
        }
    } else {
        return args;
    }
    while let Some(arg) = rest.next() {
        let list = match arg.strip_prefix("-o") {
            Some("") => match rest.next() {
                Some(list) => list,
                None => {
                    out.push(arg);
                    break;
                }
            },
            Some(list) => list.to_string(),
            None => {
                out.push(arg);
                continue;
            }
        };
        for opt in list.split(',').filter(|o| !o.is_empty()) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            if IGNORED.contains(&key) || key.starts_with("x-") || key == "comment" {
                continue;
            }
            if KERNEL.contains(&key) && value.is_none() {
                out.extend(["-o".into(), key.into()]);
                continue;
            }
            out.push(format!("--{}", key.replace('_', "-")));
            out.extend(value.map(str::to_string));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> String {
        let args = line.split(' ').map(String::from).collect();
        expand(args, |name| ["mount", "meta", "put"].contains(&name)).join(" ")
    }

    #[test]
    fn mount_helper_form_becomes_tfsfs_mount() {
        assert_eq!(
            run("tfsfs http://m:7700 /mnt/d -o rw,nosuid,nodev,cache_size=1048576,allow_other,_netdev,x-systemd.automount"),
            "tfsfs mount /mnt/d --meta http://m:7700 --cache-size 1048576 -o allow_other"
        );
        assert_eq!(
            run("tfsfs tfsfs /mnt/d -o meta=http://m:7700,uid=3,no_sidecar,ro --foreground"),
            "tfsfs mount /mnt/d --meta http://m:7700 --uid 3 --no-sidecar -o ro --foreground"
        );
    }

    #[test]
    fn tfsfs_mount_takes_the_same_options() {
        assert_eq!(
            run("tfsfs mount /d -ocache_dir=/c,threads=4 -o allow_other"),
            "tfsfs mount /d --cache-dir /c --threads 4 -o allow_other"
        );
    }

    #[test]
    fn other_commands_are_left_alone() {
        assert_eq!(run("tfsfs put -o x a b"), "tfsfs put -o x a b");
        assert_eq!(run("tfsfs --help"), "tfsfs --help");
        assert_eq!(run("tfsfs"), "tfsfs");
    }
}
