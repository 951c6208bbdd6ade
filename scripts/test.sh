#!/usr/bin/env bash
# The test command: installs what the tests need, builds once in release,
# checks formatting and lints, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
command -v rsync >/dev/null 2>&1 || need_apt+=(rsync)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# tests/mount.rs drives the mount with cmp/diff, tar and umount.
command -v cmp >/dev/null 2>&1 || need_apt+=(diffutils)
command -v tar >/dev/null 2>&1 || need_apt+=(tar)
command -v umount >/dev/null 2>&1 || need_apt+=(mount)
# tests/xattrs.rs: setfattr/getfattr and setfacl/getfacl.
command -v setfattr >/dev/null 2>&1 || need_apt+=(attr)
command -v setfacl >/dev/null 2>&1 || need_apt+=(acl)
# apt_install [OPTION...] PACKAGE...: as root; otherwise a warning.
apt_install() {
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  else
    echo "warning: missing $* (install as root)" >&2
  fi
}
if [ ${#need_apt[@]} -gt 0 ]; then
  apt_install "${need_apt[@]}"
fi
# tests/metrics.rs checks every /metrics with promtool and reads it with
# the Prometheus Python client's parser (Debian's python3); only the tools are
# wanted, not the exporters Debian recommends beside it.
command -v promtool >/dev/null 2>&1 || apt_install --no-install-recommends prometheus
/usr/bin/python3 -c "import prometheus_client" 2>/dev/null || apt_install --no-install-recommends python3-prometheus-client
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy

cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
cargo build --release --all-targets
log=$(mktemp)
pg_dir=
trap 'rm -f "$log"; [ -z "$pg_dir" ] || scripts/pg.sh stop "$pg_dir"' EXIT
cargo test --release --all-targets 2>&1 | tee "$log"

# POSIX conformance on a real mount: pjdfstest and fsx.
scripts/posix.sh

# The same server suites with the metadata store in PostgreSQL (a
# throw-away cluster; each test cluster gets a database of its own), and
# the tests of several metadata servers on one PostgreSQL.
pg_env=$(scripts/pg.sh)
pg_dir=$(sed -n 's/^PG_DIR=//p' <<<"$pg_env")
export TFSFS_TEST_PG=$(sed -n 's/^TFSFS_TEST_PG=//p' <<<"$pg_env")
# Skipped there: tests that read or write the SQLite file itself.
pg_skip=(--skip a_store_of_a_newer --skip a_version_1_store)
for suite in rest_v1 rest_v2 storage sidecar mount small_files scale streaming links xattrs trust; do
  TFSFS_TEST_DB=postgres cargo test --release --test "$suite" -- "${pg_skip[@]}" 2>&1 | tee -a "$log"
done

# One closing line for the whole run (set -o pipefail has already stopped
# the script if any test failed).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
