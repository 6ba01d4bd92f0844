#!/usr/bin/env bash
# Builds the agent for router CPUs: the router profile, statically linked against musl,
# into target/cross/<triple>/phonehome, for each ARCH given (default: all of
# cross/lib.sh's table). It first gets what the builds need (rustup targets, rust-src
# for the nightly, cargo-zigbuild from PyPI) and says plainly which piece could not be
# had. Then it checks each binary (ELF machine, static, float ABI) and runs its
# --version, under qemu-user with the router's CPU model where the CPU is not this one.
# Builds run three at a time, the build-std ones first (they are long and mostly one
# thread: rustc builds core, alloc, std and then the agent's LTO one after the other),
# each in its own target dir (target/cross-build/<triple>), kept as a cache.
#
# usage: cross/build.sh [ARCH...]      ARCH: x86_64 aarch64 armv7 mipsel mips
set -uo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=cross/lib.sh
. "$REPO_DIR/cross/lib.sh"

JOBS=${PHONEHOME_CROSS_JOBS:-3}
BUILD_DIR=$REPO_DIR/target/cross-build
MISSING=()

say() { printf 'cross: %s\n' "$*"; }
missing() {
    MISSING+=("$*")
    say "COULD NOT HAVE: $*"
}

# --- what the builds need -------------------------------------------------------------

# What build-std needs: the nightly with rust-src, and cargo-zigbuild (+ ziglang).
BUILD_STD_READY=''
ensure_build_std() {
    [ -n "$BUILD_STD_READY" ] && { [ "$BUILD_STD_READY" = yes ]; return; }
    BUILD_STD_READY=no
    if ! rustup toolchain list 2>/dev/null | grep -q "^$CROSS_NIGHTLY"; then
        missing "the Rust toolchain '$CROSS_NIGHTLY' (build-std needs a nightly; rustup toolchain list has none, and this machine cannot download toolchains)"
        return 1
    fi
    if ! rustup component list --installed --toolchain "$CROSS_NIGHTLY" 2>/dev/null | grep -q '^rust-src'; then
        say "rustup component add rust-src --toolchain $CROSS_NIGHTLY"
        rustup component add rust-src --toolchain "$CROSS_NIGHTLY" >/dev/null 2>&1 ||
            { missing "rust-src for $CROSS_NIGHTLY (rustup component add rust-src failed)"; return 1; }
    fi
    if ! command -v cargo-zigbuild >/dev/null 2>&1; then
        say "pip install cargo-zigbuild (brings ziglang, the linker)"
        local pip=(python3 -m pip)
        "${pip[@]}" install --quiet cargo-zigbuild >/dev/null 2>&1 ||
            { missing "cargo-zigbuild from PyPI (python3 -m pip install cargo-zigbuild failed)"; return 1; }
        # pip's scripts dir may not be on PATH (a pyenv without shims, a user install)
        PATH=$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)
        hash -r
        command -v cargo-zigbuild >/dev/null 2>&1 ||
            { missing "cargo-zigbuild: pip installed it but it is not on PATH ($PATH)"; return 1; }
    fi
    BUILD_STD_READY=yes
}

# WAY := the way ARCH is built here: its table's way, or build-std when rustup has no
# prebuilt std for it.
WAY=''
way_for() {
    local arch=$1
    WAY=$(cross_way "$arch")
    if [ "$WAY" = stable ] && ! cross_rustup_target "$(cross_triple "$arch")"; then
        say "$arch: building std from source instead (nightly -Zbuild-std)"
        WAY=build-std
    fi
    if [ "$WAY" = build-std ] && ! ensure_build_std; then
        missing "a way to build $arch (see above)"
        return 1
    fi
}

# --- building -------------------------------------------------------------------------

# build_one ARCH WAY: builds, copies the binary to target/cross/<triple>/ and checks it.
build_one() {
    local arch=$1 way=$2 triple dir out log start
    triple=$(cross_triple "$arch")
    dir=$BUILD_DIR/$triple
    out=$REPO_DIR/target/cross/$triple
    log=$out/build.log
    mkdir -p "$out" "$dir"
    rm -f "$out/phonehome" "$out/way" "$out/ok"
    start=$SECONDS
    if ! (cd "$REPO_DIR" && cross_cargo "$arch" "$way" "$dir" --locked -p phonehome) >"$log" 2>&1; then
        say "$arch: the build FAILED ($way); last lines of $log:"
        tail -n 15 "$log" | sed 's/^/    /'
        return 1
    fi
    install -m 0755 "$(cross_bin "$dir" "$arch" phonehome)" "$out/phonehome"
    echo "$way" >"$out/way"
    local facts runner version
    facts=$(cross_elf_check "$arch" "$out/phonehome") || { say "$arch: $facts"; return 1; }
    runner=$(cross_runner "$arch")
    # shellcheck disable=SC2086 # the runner is a command and its flags
    version=$($runner "$out/phonehome" --version 2>&1) ||
        { say "$arch: $out/phonehome --version failed under '${runner:-native}': $version"; return 1; }
    say "$arch: $triple ($way, $((SECONDS - start)) s): $(stat -c %s "$out/phonehome") B, $facts; '$version' $(cross_where "$arch")"
    : >"$out/ok"
}

main() {
    local arches=("$@") a
    [ ${#arches[@]} -gt 0 ] || arches=("${CROSS_ARCHES[@]}")
    for a in "${arches[@]}"; do
        cross_triple "$a" >/dev/null ||
            { echo "cross/build.sh: unknown arch '$a' (known: ${CROSS_ARCHES[*]})" >&2; exit 2; }
    done
    command -v rustup >/dev/null 2>&1 || { missing "rustup (the cross builds need it)"; exit 1; }
    command -v readelf >/dev/null 2>&1 || { missing "readelf (Debian binutils)"; exit 1; }
    # Decide every arch's way first (installs run one at a time), then build.
    local -a ways=()
    local failed=0 w running=0
    for a in "${arches[@]}"; do
        if way_for "$a"; then
            ways+=("$a:$WAY")
        else
            # No stale binary of an earlier run may stand in for this one.
            rm -f "$(cross_agent_path "$a")" "$(dirname "$(cross_agent_path "$a")")/ok"
            failed=1
        fi
    done
    # The long build-std builds first, so that the short ones fill in beside them.
    [ ${#ways[@]} -gt 0 ] &&
        mapfile -t ways < <(printf '%s\n' "${ways[@]}" | grep ':build-std$'; printf '%s\n' "${ways[@]}" | grep -v ':build-std$')
    for w in "${ways[@]}"; do
        if [ "$running" -ge "$JOBS" ]; then
            wait -n
            running=$((running - 1))
        fi
        build_one "${w%%:*}" "${w#*:}" &
        running=$((running + 1))
    done
    wait
    # Each build leaves an `ok` beside its binary only when it built and checked out.
    for w in "${ways[@]}"; do
        [ -f "$(dirname "$(cross_agent_path "${w%%:*}")")/ok" ] || failed=1
    done
    if [ ${#MISSING[@]} -gt 0 ]; then
        local IFS=';'
        say "could not have: ${MISSING[*]}"
    fi
    [ "$failed" = 0 ] && [ ${#MISSING[@]} -eq 0 ]
}

main "$@"
