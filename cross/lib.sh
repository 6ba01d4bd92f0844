# shellcheck shell=bash
# The router CPUs the agent is built for, and how: one table and the functions that
# build a crate for one of them (the agent by cross/build.sh, the size baselines by
# bench/lib/cross-size.sh), so that an agent and its hello-world are always built the
# same way. Sourced; needs REPO_DIR.
#
# Two ways to a static musl binary:
#   stable     rustup's prebuilt std for the target (`rustup target add`), linked by the
#              host cc (x86_64) or rust-lld with rustc's own musl objects.
#   build-std  tier 3 targets (MIPS; rustup has no std for them) and any target whose
#              prebuilt std rustup cannot get here: the machine's nightly builds std from
#              rust-src (-Zbuild-std=std,panic_abort), cargo-zigbuild (PyPI, brings
#              ziglang) links with zig's musl.

# arch | target triple | way | qemu-user binary | -cpu (a real router's core) | what has it
CROSS_TABLE='x86_64|x86_64-unknown-linux-musl|stable|||x86 routers and VMs (OpenWrt x86/64)
aarch64|aarch64-unknown-linux-musl|stable|qemu-aarch64-static|cortex-a53|MT7622/MT7981/MT7986, IPQ807x (OpenWrt aarch64_cortex-a53)
armv7|armv7-unknown-linux-musleabihf|stable|qemu-arm-static|cortex-a7|IPQ40xx (OpenWrt arm_cortex-a7_neon-vfpv4)
mipsel|mipsel-unknown-linux-musl|build-std|qemu-mipsel-static|24Kc|MT7621, MT76x8 (OpenWrt mipsel_24kc)
mips|mips-unknown-linux-musl|build-std|qemu-mips-static|24Kc|Atheros/QCA ath79 (OpenWrt mips_24kc)'

# shellcheck disable=SC2034 # used by the scripts that source this
CROSS_ARCHES=(x86_64 aarch64 armv7 mipsel mips)

# The nightly that builds std for build-std targets (the machine's preinstalled one).
CROSS_NIGHTLY=${PHONEHOME_CROSS_NIGHTLY:-nightly}

# cross_field ARCH N: field N (1-6) of ARCH's row; fails for an unknown arch.
cross_field() {
    local row
    row=$(printf '%s\n' "$CROSS_TABLE" | awk -F'|' -v a="$1" '$1 == a') || return 1
    [ -n "$row" ] || return 1
    printf '%s\n' "$row" | cut -d'|' -f"$2"
}
cross_triple() { cross_field "$1" 2; }
cross_way() { cross_field "$1" 3; }
cross_qemu() { cross_field "$1" 4; }
cross_cpu() { cross_field "$1" 5; }
cross_hardware() { cross_field "$1" 6; }

# cross_host_arch: this machine's CPU as an arch of the table whose static musl build
# needs only stable Rust (x86_64, aarch64, armv7); nothing for any other.
cross_host_arch() {
    case $(uname -m) in
    x86_64) echo x86_64 ;;
    aarch64) echo aarch64 ;;
    armv7l) echo armv7 ;;
    esac
}

# cross_rustup_target TRIPLE: rustup's prebuilt std of TRIPLE for the stable toolchain,
# added when missing; false if rustup cannot get it, saying why. What it says goes to
# stderr. $RUSTUP names the rustup to run (default: the one on PATH).
cross_rustup_target() {
    local triple=$1 rustup=${RUSTUP:-rustup} out
    "$rustup" target list --installed 2>/dev/null | grep -qx "$triple" && return 0
    echo "== rustup target add $triple" >&2
    out=$("$rustup" target add "$triple" 2>&1 </dev/null) && return 0
    echo "rustup could not get the prebuilt std of $triple: $(grep -m1 -iE 'error|404' <<<"$out")" >&2
    return 1
}

# Where the agent of ARCH lands: target/cross/<triple>/phonehome.
cross_agent_path() { echo "$REPO_DIR/target/cross/$(cross_triple "$1")/phonehome"; }

# How to run a binary of ARCH here: the qemu-user command (with the router's CPU model)
# that prefixes it, or nothing when it runs natively.
cross_runner() {
    local q
    q=$(cross_qemu "$1")
    [ -n "$q" ] && echo "$q -cpu $(cross_cpu "$1")"
    return 0
}

# "where ARCH runs": for test output and tables.
cross_where() {
    local r
    r=$(cross_runner "$1")
    if [ -n "$r" ]; then echo "$r (qemu-user)"; else echo "natively on this $(uname -m) kernel"; fi
}

# The env var name cargo reads for TRIPLE's settings: CARGO_TARGET_<TRIPLE>_<WHAT>.
cross_env_name() {
    local t=${1^^}
    echo "CARGO_TARGET_${t//-/_}_$2"
}

# cross_cargo ARCH WAY TARGET_DIR CARGO_ARGS...: cargo build for ARCH the WAY given (the
# router profile and --target are added), statically linked.
cross_cargo() {
    local arch=$1 way=$2 dir=$3 triple
    shift 3
    triple=$(cross_triple "$arch")
    case $way in
    stable)
        local -a env=("$(cross_env_name "$triple" RUSTFLAGS)=-C target-feature=+crt-static")
        [ "$arch" = x86_64 ] || env+=("$(cross_env_name "$triple" LINKER)=rust-lld")
        env "${env[@]}" CARGO_TARGET_DIR="$dir" \
            cargo build --profile router --target "$triple" "$@"
        ;;
    build-std)
        # rustc's self-contained musl objects do not exist for tier 3 targets: zig's
        # musl provides crt1.o and libc. cargo-zigbuild's wrappers (zigcc-*, ar) go to
        # the target dir: in its shared default (~/.cache/cargo-zigbuild) two first
        # builds side by side race to make them, and one fails with "File exists"
        # (mips beside mipsel, on a machine that had never run cargo-zigbuild).
        env "$(cross_env_name "$triple" RUSTFLAGS)=-C target-feature=+crt-static -C link-self-contained=no" \
            CARGO_TARGET_DIR="$dir" CARGO_ZIGBUILD_CACHE_DIR="$dir/cargo-zigbuild" \
            cargo "+$CROSS_NIGHTLY" zigbuild --profile router --target "$triple" \
            -Zbuild-std=std,panic_abort "$@"
        ;;
    *) return 2 ;;
    esac
}

# cross_bin TARGET_DIR ARCH NAME: where cross_cargo puts binary NAME of ARCH built in
# TARGET_DIR.
cross_bin() {
    echo "$1/$(cross_triple "$2")/router/$3"
}

# cross_elf_check ARCH FILE: the file is a static executable for ARCH (machine, class,
# byte order, no interpreter; soft-float on MIPS, hard-float on armv7). Prints the
# facts; fails with what is wrong.
cross_elf_check() {
    local arch=$1 f=$2 hdr machine class data want_m want_c want_d
    hdr=$(readelf -h "$f" 2>&1) || { echo "not an ELF file: $f"; return 1; }
    machine=$(awk -F': *' '/Machine:/ {print $2}' <<<"$hdr")
    class=$(awk -F': *' '/Class:/ {print $2}' <<<"$hdr")
    data=$(awk -F': *' '/Data:/ {print $2}' <<<"$hdr")
    case $arch in
    x86_64) want_m='Advanced Micro Devices X86-64' want_c=ELF64 want_d=little ;;
    aarch64) want_m=AArch64 want_c=ELF64 want_d=little ;;
    armv7) want_m=ARM want_c=ELF32 want_d=little ;;
    mipsel) want_m='MIPS R3000' want_c=ELF32 want_d=little ;;
    mips) want_m='MIPS R3000' want_c=ELF32 want_d=big ;;
    *) echo "unknown arch $arch"; return 1 ;;
    esac
    if [ "$machine" != "$want_m" ] || [ "$class" != "$want_c" ] || [[ $data != *"$want_d endian"* ]]; then
        echo "$f is $class $data $machine, not $arch"
        return 1
    fi
    if readelf -l "$f" | grep -q 'program interpreter'; then
        echo "$f is dynamically linked ($(readelf -l "$f" | grep -o 'interpreter: [^]]*'))"
        return 1
    fi
    local float=''
    case $arch in
    mips*)
        float=$(readelf -A "$f" | awk -F': *' '/FP ABI:/ {print $2}')
        [ "$float" = "Soft float" ] || { echo "$f: FP ABI '$float', expected soft float"; return 1; }
        float=", soft float"
        ;;
    armv7)
        readelf -A "$f" | grep -q 'Tag_ABI_VFP_args: VFP registers' ||
            { echo "$f: not the hard-float ABI (eabihf)"; return 1; }
        float=", hard float (eabihf)"
        ;;
    esac
    echo "$class $want_d-endian $machine, static$float"
}
