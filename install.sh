#!/usr/bin/env bash
# phonehome's one entry point: install the server side, bootstrap a generic Linux
# device, run the narrated demo, or run every test. Run as root on Debian/Ubuntu;
# it installs what it needs from apt and builds with cargo.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$REPO_DIR"
export CARGO_TERM_COLOR=never
# Builds go to the repo's own target/ whatever the caller's environment says, so that
# install-server.sh and the tests find the binaries where this script put them.
export CARGO_TARGET_DIR="$REPO_DIR/target"
export PHONEHOME_BIN_DIR="$CARGO_TARGET_DIR/release"

usage() {
    cat <<'EOF'
usage: ./install.sh COMMAND [OPTIONS]

  server [--root DIR]        build, then install the server tools, the gate, the device
                             group, state dirs and the sshd drop-in (server-scripts/install-server.sh)
  device --server HOST [--root DIR] [--client auto|dbclient|ssh]
         [--interface IF] [--device-id ID]
                             bootstrap a generic Linux device: install the agent, generate
                             its key, add the cron line, print the add-device command
  demo                       install what is needed, then watch a NATed router call home
                             and an admin log into it through its tunnel (leaves nothing behind)
  test                       install what is needed and run every test: unit, integration,
                             shellcheck, end to end (both ssh clients), package, bench smoke
EOF
}

say() { printf '%s\n' "$*"; }
die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}

need_root() {
    [ "$(id -u)" = 0 ] || die "$1 needs root (it installs packages and creates namespaces): run it with sudo"
}

# --- dependencies ------------------------------------------------------------------

# command -> Debian package that provides it
declare -A PKG_OF=(
    [sshd]=openssh-server [ssh]=openssh-client [ssh-keygen]=openssh-client
    [dropbear]=dropbear-bin [dbclient]=dropbear-bin [dropbearkey]=dropbear-bin
    [dropbearconvert]=dropbear-bin [busybox]=busybox-static [iptables]=iptables
    [ip]=iproute2 [ss]=iproute2 [unshare]=util-linux [nsenter]=util-linux
    [useradd]=passwd [timeout]=coreutils [jq]=jq [conntrack]=conntrack [cc]=gcc
    [shellcheck]=shellcheck [pgrep]=procps [ps]=procps [gzip]=gzip [tar]=tar
    [python3]=python3 [strip]=binutils [taskset]=util-linux [awk]=mawk [/usr/bin/time]=time
    [openssl]=openssl [script]=bsdutils
)

# Commands the lab (demo and tests) runs.
LAB_COMMANDS=(sshd ssh ssh-keygen dropbear dbclient dropbearkey dropbearconvert busybox
    iptables ip ss unshare nsenter useradd timeout jq conntrack cc pgrep)
# And what `test` adds: shellcheck, and what openwrt-package/test.sh and bench/run use
# (openwrt-package/test.sh builds OpenWrt's opkg, uci and apk with ../shared/openwrt-tools,
# whose build.sh installs the compilers and libraries it needs itself).
TEST_COMMANDS=(shellcheck python3 strip taskset awk ps gzip tar /usr/bin/time openssl script)

# Install the Debian packages providing any missing command (a name on PATH or in
# /usr/sbin, or an absolute path). Never asks anything.
ensure_commands() {
    local c missing=()
    for c in "$@"; do
        case $c in
        /*) [ -x "$c" ] && continue ;;
        *) { command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || [ -x "/sbin/$c" ]; } && continue ;;
        esac
        missing+=("${PKG_OF[$c]}")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    command -v apt-get >/dev/null 2>&1 ||
        die "missing packages ${missing[*]} and no apt-get here: install them by hand"
    say "== installing with apt-get: ${missing[*]}"
    # Packaged daemons (sshd, dropbear) must not start on the host: the lab runs its own.
    local policy=/usr/sbin/policy-rc.d made_policy=''
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && made_policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null || rc=$?
    if [ "$rc" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" </dev/null || rc=$?
    fi
    [ -n "$made_policy" ] && rm -f "$policy"
    [ "$rc" = 0 ] || die "apt-get install ${missing[*]} failed (exit $rc); see its output above"
}

CARGO=
find_cargo() {
    if command -v cargo >/dev/null 2>&1; then
        CARGO=cargo
    elif [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
        CARGO="${CARGO_HOME:-$HOME/.cargo}/bin/cargo"
    else
        die "cargo not found. Install Rust (>= 1.75) with rustup: https://rustup.rs (Debian 12's own 'apt-get install cargo' is 1.63, too old), then run this again"
    fi
}

# rustfmt and clippy, which the test stages run (a minimal rustup profile lacks them).
ensure_rust_components() {
    local c missing=()
    for c in fmt clippy; do
        "$CARGO" "$c" --version >/dev/null 2>&1 || missing+=("$([ "$c" = fmt ] && echo rustfmt || echo clippy)")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v rustup >/dev/null 2>&1 || die "cargo ${missing[*]} missing and no rustup to add them: install them with your Rust"
    say "== rustup component add ${missing[*]}"
    rustup component add "${missing[@]}" </dev/null || die "rustup component add ${missing[*]} failed"
}

# Release build of the whole workspace into target/release (a no-op when up to date).
build_release() {
    find_cargo
    say "== cargo build --release --workspace"
    "$CARGO" build --release --workspace --locked </dev/null
}

# --- server ------------------------------------------------------------------------

cmd_server() {
    [ -x server-scripts/install-server.sh ] || die "server-scripts/install-server.sh is missing from this checkout"
    build_release
    exec server-scripts/install-server.sh --bin-dir "$PHONEHOME_BIN_DIR" "$@"
}

# --- device ------------------------------------------------------------------------

cmd_device() {
    local server='' root=/ client=auto iface='' devid=''
    while [ $# -gt 0 ]; do
        case $1 in
        --server) server=${2:?--server needs a host}; shift 2 ;;
        --root) root=${2:?--root needs a directory}; shift 2 ;;
        --client) client=${2:?--client needs auto, dbclient or ssh}; shift 2 ;;
        --interface) iface=${2:?--interface needs a name}; shift 2 ;;
        --device-id) devid=${2:?--device-id needs an id}; shift 2 ;;
        *) die "device: unknown option '$1' (see ./install.sh --help)" ;;
        esac
    done
    [ -n "$server" ] || die "device: --server HOST is required (the public address of your phonehome server)"
    case $client in auto | dbclient | ssh) ;; *) die "device: --client must be auto, dbclient or ssh, not '$client'" ;; esac
    if [ "$client" = auto ]; then
        if command -v dbclient >/dev/null 2>&1; then client=dbclient; else client=ssh; fi
    fi
    command -v "$client" >/dev/null 2>&1 ||
        die "device: the ssh client '$client' is not installed (Debian: apt-get install $([ "$client" = ssh ] && echo openssh-client || echo dropbear-bin))"

    local agent=$PHONEHOME_BIN_DIR/phonehome
    if [ ! -x "$agent" ]; then
        find_cargo
        say "== cargo build --release -p phonehome"
        "$CARGO" build --release --locked -p phonehome </dev/null
    fi
    root=${root%/}
    local etc=$root/etc/phonehome key
    install -d -m 0755 "$root/usr/local/bin"
    install -d -m 0700 "$etc"
    install -m 0755 "$agent" "$root/usr/local/bin/phonehome"
    say "installed $root/usr/local/bin/phonehome"

    local pub
    if [ "$client" = dbclient ]; then
        key=$etc/id_dropbear
        if [ ! -f "$key" ]; then
            dropbearkey -t ed25519 -f "$key" >/dev/null 2>&1 ||
                dropbearkey -t rsa -s 2048 -f "$key" >/dev/null ||
                die "device: dropbearkey could not generate $key"
        fi
        pub=$(dropbearkey -y -f "$key" | grep -m1 '^ssh-\|^ecdsa-' | cut -d' ' -f1,2)
    else
        key=$etc/id_ed25519
        [ -f "$key" ] || ssh-keygen -q -t ed25519 -N '' -C phonehome -f "$key" ||
            die "device: ssh-keygen could not generate $key"
        pub=$(cut -d' ' -f1,2 "$key.pub")
    fi
    chmod 0600 "$key"
    say "device key: $key"

    local idargs=()
    [ -n "$iface" ] && idargs+=(--interface "$iface")
    [ -n "$devid" ] && idargs+=(--device-id "$devid")
    local id
    id=$("$root/usr/local/bin/phonehome" "${idargs[@]}" id) ||
        die "device: 'phonehome id' could not tell this device's id (give --interface IF or --device-id ID)"

    # The key path the device will use: as seen from the device's own root.
    local devkey=${key#"$root"}
    local cronline="* * * * * root /usr/local/bin/phonehome poll"
    if [ "$root" = "" ]; then
        printf '%s\n' "# phonehome: call home every minute" "$cronline" >/etc/cron.d/phonehome
        chmod 0644 /etc/cron.d/phonehome
        say "cron: /etc/cron.d/phonehome"
        command -v cron >/dev/null 2>&1 || say "note: no cron daemon found; install one (apt-get install cron)"
    else
        say "cron: not written outside / ; in the target system add to /etc/cron.d/phonehome:"
        say "  $cronline"
    fi

    local extra="--key $devkey --client $client"
    [ -n "$iface" ] && extra+=" --interface $iface"
    [ -n "$devid" ] && extra+=" --device-id $devid"
    cat <<EOF

Device id: $id
Next steps:
 1. On the server ($server), as root:
      add-device $id '$pub'
 2. add-device prints a 'phonehome setup ...' line. Run it here, as root, adding:
      $extra
    (it writes /etc/phonehome/phonehome.conf and pins the server's host keys).
 3. Within a minute, 'list-devices' on the server shows this device.
EOF
}

# --- demo --------------------------------------------------------------------------

cmd_demo() {
    need_root demo
    exec </dev/null
    ensure_commands "${LAB_COMMANDS[@]}"
    build_release
    exec bash tests/e2e/demo.sh
}

# --- test --------------------------------------------------------------------------

RESULTS=()
ANY_FAILED=0

# stage NAME CMD...: run one stage, time it, record the outcome.
stage() {
    local name=$1 start rc=0
    shift
    say ""
    say "######## $name"
    start=$SECONDS
    "$@" || rc=$?
    local took=$((SECONDS - start))
    if [ "$rc" = 0 ]; then
        RESULTS+=("$(printf 'ok     %-40s %5ss' "$name" "$took")")
    else
        RESULTS+=("$(printf 'FAILED %-40s %5ss (exit %s)' "$name" "$took" "$rc")")
        ANY_FAILED=1
    fi
}

# Every shell file in the repo: *.sh, and files whose first line names sh or bash.
shell_files() {
    git ls-files -co --exclude-standard 2>/dev/null | while IFS= read -r f; do
        [ -f "$f" ] || continue
        case $f in
        target/* | target-*/*) continue ;;
        *.sh) printf '%s\n' "$f" ;;
        *)
            head -n1 "$f" 2>/dev/null | grep -qE '^#!.*(/|env )(ba)?sh( |$)' && printf '%s\n' "$f"
            ;;
        esac
    done
}

run_shellcheck() {
    local files
    mapfile -t files < <(shell_files)
    say "shellcheck on ${#files[@]} files: ${files[*]}"
    shellcheck -x "${files[@]}"
}

# --- the host must not change ----------------------------------------------------------

# Paths of the host a test could touch by mistake (issue 9, threat 33).
HOST_PATHS=(/etc /usr/local /var/lib /var/spool/cron /root/.ssh /home)

# host_snapshot DIR...: every name under the DIRs with its type and mode, the target
# of each link and the SHA-256 of each file, sorted; the repository itself left out.
host_snapshot() {
    local d dirs=()
    for d in "$@"; do [ -e "$d" ] && dirs+=("$d"); done
    [ "${#dirs[@]}" -gt 0 ] || return 0
    {
        find "${dirs[@]}" -xdev -path "$REPO_DIR" -prune -o ! -type f -printf '%y %m %p %l\n'
        find "${dirs[@]}" -xdev -path "$REPO_DIR" -prune -o -type f -printf '%m %p\n'
        find "${dirs[@]}" -xdev -path "$REPO_DIR" -prune -o -type f -print0 | xargs -0 -r sha256sum
    } 2>/dev/null | LC_ALL=C sort
}

# host_unchanged BEFORE: compare the host with the snapshot taken before the tests.
host_unchanged() {
    local after
    after=$(mktemp)
    host_snapshot "${HOST_PATHS[@]}" >"$after"
    if ! cmp -s "$1" "$after"; then
        say "the tests changed the host (${HOST_PATHS[*]}):"
        diff "$1" "$after" | head -n 40
        rm -f "$after"
        return 1
    fi
    rm -f "$after"
    say "host unchanged: $(wc -l <"$1") entries under ${HOST_PATHS[*]}"
}

# The snapshot must see a change, or the check above proves nothing.
snapshot_self_check() {
    local t a b
    t=$(mktemp -d) a=$(mktemp) b=$(mktemp)
    printf 'x' >"$t/f"
    host_snapshot "$t" >"$a"
    printf 'y' >"$t/f"
    host_snapshot "$t" >"$b"
    local rc=0
    cmp -s "$a" "$b" && { say "host_snapshot does not see a changed file"; rc=1; }
    rm -rf "$t" "$a" "$b"
    return "$rc"
}

cmd_test() {
    need_root test
    exec </dev/null
    local t0=$SECONDS
    ensure_commands "${LAB_COMMANDS[@]}" "${TEST_COMMANDS[@]}"
    find_cargo
    ensure_rust_components
    # Everything installed above; from here on the host must stay as it is.
    local before
    before=$(mktemp)
    snapshot_self_check || die "the host snapshot is broken"
    host_snapshot "${HOST_PATHS[@]}" >"$before"
    stage "cargo fmt --check" "$CARGO" fmt --all -- --check
    stage "cargo clippy -D warnings" "$CARGO" clippy --workspace --all-targets --locked -- -D warnings
    stage "cargo build --release --workspace" "$CARGO" build --release --workspace --locked
    stage "cargo test --workspace" "$CARGO" test --workspace --locked
    stage "shellcheck" run_shellcheck
    local logs=$REPO_DIR/target/e2e-logs
    rm -rf "$logs"
    stage "e2e scenarios (dbclient)" env PHONEHOME_E2E_LOGS="$logs/dbclient" bash tests/e2e/run.sh --client dbclient
    stage "e2e scenarios (OpenSSH ssh)" env PHONEHOME_E2E_LOGS="$logs/ssh" bash tests/e2e/run.sh --client ssh
    stage "e2e stolen device key" env PHONEHOME_E2E_LOGS="$logs/stolen" bash tests/e2e/stolen-key.sh
    stage "e2e held polls (dbclient)" env CARGO="$CARGO" PHONEHOME_E2E_LOGS="$logs/hold-dbclient" bash tests/e2e/hold.sh --client dbclient
    stage "e2e held polls (OpenSSH ssh)" env CARGO="$CARGO" PHONEHOME_E2E_LOGS="$logs/hold-ssh" bash tests/e2e/hold.sh --client ssh
    if [ -f openwrt-package/test.sh ]; then
        stage "openwrt-package/test.sh" bash openwrt-package/test.sh
    else
        RESULTS+=("skip   openwrt-package/test.sh (not in this checkout)")
    fi
    if [ -f bench/run ]; then
        stage "bench/run --quick" bash bench/run --quick
    else
        RESULTS+=("skip   bench/run --quick (not in this checkout)")
    fi
    stage "the host is unchanged" host_unchanged "$before"
    rm -f "$before"
    say ""
    say "######## summary ($((SECONDS - t0))s in all)"
    printf '%s\n' "${RESULTS[@]}"
    local ok=0 bad=0 r
    for r in "${RESULTS[@]}"; do
        case $r in ok*) ok=$((ok + 1)) ;; FAILED*) bad=$((bad + 1)) ;; esac
    done
    [ "$ANY_FAILED" = 0 ] || say "logs of the end-to-end runs: $logs"
    say "stages: $ok passed, $bad failed"
    return "$ANY_FAILED"
}

# --- dispatch ----------------------------------------------------------------------

[ $# -ge 1 ] || {
    usage >&2
    exit 2
}
command=$1
shift
case $command in
server) cmd_server "$@" ;;
device) cmd_device "$@" ;;
demo) cmd_demo "$@" ;;
test) cmd_test "$@" ;;
-h | --help | help) usage ;;
*)
    usage >&2
    die "unknown command '$command'"
    ;;
esac
