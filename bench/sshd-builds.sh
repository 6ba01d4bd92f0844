#!/usr/bin/env bash
# sshd's CPU per device poll on different sshd builds, side by side: Debian's
# /usr/sbin/sshd, and OpenSSH 10.0 built by cross/openssh.sh with OpenSSL and without it.
# A question section 3 of BENCHMARKS.md leaves open: how much of a login is the build
# rather than the configuration (issue 14's 3,000 polls a minute per core).
#
# Each sshd runs the same lean configuration (the devices' own sshd's choices: ed25519
# host key only, no PAM, no compression, mlkem768x25519 then curve25519) and a forced
# command that reads the status report line and answers an empty inbox, as the gate
# does. All of them listen in a private network and mount namespace, where root's login
# shell is /bin/sh (with bash, sshd's forced command would source root's .bashrc).
# Rounds of LOGINS dbclient logins alternate between the builds; a login's CPU is read
# from the listener's /proc/<pid>/stat (utime + stime + cutime + cstime: the listener
# reaps sshd-session, which reaps the rest), as section 3 reads it.
#
# usage: bench/sshd-builds.sh [ROUNDS [LOGINS]]     (default 8 rounds of 30 logins)
set -euo pipefail

ROUNDS=${1:-8}
LOGINS=${2:-30}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
me=bench/sshd-builds.sh
[ "$(id -u)" = 0 ] || { echo "$me: run as root (sshd, namespaces)" >&2; exit 1; }
for c in unshare dbclient dropbearkey ssh-keygen; do
	command -v "$c" >/dev/null || { echo "$me: $c is missing" >&2; exit 1; }
done

mkdir -p "$REPO/target"
work=$(mktemp -d "$REPO/target/sshd-builds.XXXXXX")
trap 'rm -rf "$work"' EXIT
builds=("Debian /usr/sbin/sshd ($(/usr/sbin/sshd -V 2>&1 | head -n1 | cut -d, -f1))=/usr/sbin/sshd")
for variant in "" --without-openssl; do
	dir=$REPO/target/openssh-10.0p1${variant:+-nossl}
	echo "$me: building OpenSSH 10.0p1 ${variant:-with OpenSSL} (cross/openssh.sh, cached in $dir)" >&2
	# shellcheck disable=SC2086 # the variant is one word or none
	sshd=$(bash "$REPO/cross/openssh.sh" $variant "$dir")
	builds+=("OpenSSH 10.0p1 $([ -n "$variant" ] && echo without OpenSSL || echo with OpenSSL), cross/openssh.sh=$sshd")
done

ssh-keygen -q -t ed25519 -N '' -f "$work/host_ed25519"
dropbearkey -t ed25519 -f "$work/id_dropbear" >/dev/null 2>&1
pub=$(dropbearkey -y -f "$work/id_dropbear" | grep '^ssh-')
printf '#!/bin/sh\nIFS= read -r report\nprintf '"'"'phonehome-inbox 3\\nend\\n'"'"'\n' >"$work/gate"
chmod 755 "$work/gate"
echo "restrict,command=\"$work/gate\" $pub" >"$work/authorized_keys"
chmod 600 "$work/authorized_keys"
sed 's#^\(root:[^:]*:[^:]*:[^:]*:[^:]*:[^:]*:\).*#\1/bin/sh#' /etc/passwd >"$work/passwd"
mkdir -p /run/sshd "$work/home"
i=0
for b in "${builds[@]}"; do
	i=$((i + 1))
	cat >"$work/sshd$i.conf" <<EOF
ListenAddress 127.0.0.1:$((2400 + i))
HostKey $work/host_ed25519
AuthorizedKeysFile $work/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PidFile none
StrictModes no
Compression no
KexAlgorithms mlkem768x25519-sha256,curve25519-sha256
EOF
	[[ ${b#*=} == /usr/sbin/sshd ]] && sed -i 's/^KexAlgorithms .*/KexAlgorithms curve25519-sha256/' "$work/sshd$i.conf"
	"${b#*=}" -t -f "$work/sshd$i.conf"
done

# Inside the namespaces: start every build, then the interleaved rounds; one line a
# round and build: "INDEX MICROSECONDS_PER_LOGIN".
inner() {
	local work=$1 rounds=$2 logins=$3 n=$4 i r k a z
	pids=() # global: the EXIT trap runs after this function has returned
	ip link set lo up
	mount --bind "$work/passwd" /etc/passwd
	export HOME=$work/home
	trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT
	for ((i = 1; i <= n; i++)); do
		"$(sed -n "${i}p" "$work/binaries")" -D -f "$work/sshd$i.conf" -E "$work/sshd$i.log" &
		pids+=($!)
	done
	sleep 1
	ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
	for ((r = 1; r <= rounds; r++)); do
		for ((i = 1; i <= n; i++)); do
			a=$(ticks "${pids[i - 1]}")
			for ((k = 0; k < logins; k++)); do
				echo '{}' | dbclient -yy -i "$work/id_dropbear" -p $((2400 + i)) -T root@127.0.0.1 poll >/dev/null 2>&1 ||
					{ echo "login $k to build $i failed" >&2; exit 1; }
			done
			z=$(ticks "${pids[i - 1]}")
			echo "$i $(((z - a) * 1000000 / $(getconf CLK_TCK) / logins))"
		done
	done
}
for b in "${builds[@]}"; do echo "${b#*=}"; done >"$work/binaries"
echo "$me: $ROUNDS rounds of $LOGINS dbclient logins to each of ${#builds[@]} builds, interleaved" >&2
unshare --mount --net --pid --fork --kill-child --mount-proc --propagation private \
	bash -c "$(declare -f inner); inner \"\$@\"" inner "$work" "$ROUNDS" "$LOGINS" "${#builds[@]}" >"$work/rounds"
grep -c "Accepted publickey" "$work"/sshd*.log | sed "s|$work/||" >&2

echo "sshd CPU per poll (dbclient $(dbclient -V 2>&1 | head -n1 | cut -d' ' -f2), $ROUNDS rounds of $LOGINS logins each, interleaved; $(date -u '+%F %H:%M') UTC)"
echo
echo "| sshd build | ms / login, mean ± s.e. of the rounds | × OpenSSL build | polls/min per core, CPU-bound |"
echo "| --- | ---: | ---: | ---: |"
i=0
base=''
for b in "${builds[@]}"; do
	i=$((i + 1))
	read -r mean se < <(awk -v i="$i" '$1 == i { s += $2; q += $2 * $2; n++ }
		END { m = s / n; v = (q - n * m * m) / (n - 1); if (v < 0) v = 0; printf "%.1f %.1f\n", m / 1000, sqrt(v / n) / 1000 }' "$work/rounds")
	[[ $b == *"with OpenSSL"* ]] && base=$mean
	rows+=("$b|$mean|$se")
done
for row in "${rows[@]}"; do
	IFS='|' read -r b mean se <<<"$row"
	printf '| %s | %s ± %s | %s | %s |\n' "${b%%=*}" "$mean" "$se" \
		"$(awk -v m="$mean" -v b="$base" 'BEGIN { printf "%.2f", m / b }')" \
		"$(awk -v m="$mean" 'BEGIN { printf "%d", 60000 / m }')"
done
