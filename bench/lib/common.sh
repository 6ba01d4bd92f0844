# shellcheck shell=bash
# Shared helpers of the benchmark: logging, statistics over repeated runs, and the
# markdown fragments each section writes. Kept apart so that every section script
# reports its figures the same way (value, baseline, ratio, how, how to reproduce).

bench_log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
bench_die() { bench_log "error: $*"; exit 1; }

# median of the numbers on stdin (one per line)
stat_median() {
	sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit}
		if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}
# largest of the numbers on stdin
stat_max() { sort -g | tail -n1; }

# ratio A/B with two decimals, or "n/a" when B is zero or missing
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (b+0 == 0 || a == "" || a == "nan") print "n/a"; else printf "%.2f\n", a/b }'
}

# bytes as "1,234,567 B"
fmt_bytes() { echo "$(thousands "$1") B"; }
# 1234567 as "1,234,567" (printf's %'d needs a locale that may not be there)
thousands() { echo "$1" | sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|[,.]\)/\1,\2\3/' -e 'ta'; }

# arithmetic helpers on decimal strings
calc() { awk "BEGIN { printf \"%.${2:-1}f\n\", $1 }"; }

# time_once NS STDIN CMD...: runs CMD once in network namespace NS with STDIN as its
# stdin and prints "user sys maxrss_kib wall" (seconds, KiB), as bench/lib/rusage.c
# (built by bench/run) measures them: CMD and every child it waited for, CPU in
# microseconds, without `ip netns exec` or the measuring itself (the figures carried
# both until 270e21b: about 2.6 ms of CPU on a 9.6 ms ssh login here, which made every
# ratio look closer to 1); maxrss is the largest single process of that tree, not their
# sum.
time_once() {
	local ns=$1 stdin=$2 res rc
	shift 2
	res=$(mktemp)
	# stdout to a file, not /dev/null: GNU grep stops at the first match when its output
	# is /dev/null, which would make the floor of section 4 meaningless
	ip netns exec "$ns" "$BENCH_TMP/rusage" "$res" "$@" <"$stdin" >"$res.out" 2>>"${BENCH_ERRLOG:-/dev/null}"
	rc=$?
	if [[ $rc == 0 && ! -s $res ]]; then rc=1; fi
	[[ -s $res ]] && cat "$res"
	rm -f "$res" "$res.out"
	return "$rc"
}

# cmd_save NAME NS STDIN CMD...: remembers a command line for time_interleaved
cmd_save() {
	mkdir -p "$BENCH_TMP/cmds"
	printf '%s\0' "${@:2}" >"$BENCH_TMP/cmds/$1"
	: >"$BENCH_TMP/cmds/$1.samples"
	rm -f "$BENCH_TMP/cmds/$1.pre"
}

# cmd_pre NAME CMD...: a command time_interleaved runs, untimed, before each run of NAME
# (saved with cmd_save first): what a run needs changed, outside its figures
cmd_pre() {
	printf '%s\0' "${@:2}" >"$BENCH_TMP/cmds/$1.pre"
}

# time_interleaved N NAME...: N rounds, each running every saved command once in turn, so
# that a slow spell of the machine (other work on a shared box) hits all of them alike
time_interleaved() {
	local n=$1 r name line
	shift
	local -a argv
	for ((r = 0; r < n; r++)); do
		for name in "$@"; do
			if [[ -f $BENCH_TMP/cmds/$name.pre ]]; then
				mapfile -d '' -t argv <"$BENCH_TMP/cmds/$name.pre"
				"${argv[@]}" >/dev/null 2>>"${BENCH_ERRLOG:-/dev/null}" || true
			fi
			mapfile -d '' -t argv <"$BENCH_TMP/cmds/$name"
			if line=$(time_once "${argv[@]}"); then
				echo "$line" >>"$BENCH_TMP/cmds/$name.samples"
			else
				echo fail >>"$BENCH_TMP/cmds/$name.samples"
			fi
		done
	done
}

# time_stats NAME: "cpu_ms_median rss_kib_median wall_ms_median wall_ms_max failures"
# (CPU to a tenth of a millisecond)
# time_cpu_mean NAME: "mean_cpu_ms standard_error_ms" of the successful runs, to a tenth
# of a millisecond
time_cpu_mean() {
	grep -v '^fail$' "$BENCH_TMP/cmds/$1.samples" | awk '{ x = ($1 + $2) * 1000; n++; s += x; q += x * x }
		END { if (n < 2) { print "nan nan"; exit }
			m = s / n; v = (q - n * m * m) / (n - 1); if (v < 0) v = 0
			printf "%.1f %.1f\n", m, sqrt(v / n) }'
}

time_stats() {
	local f=$BENCH_TMP/cmds/$1.samples ok fails
	ok=$(mktemp)
	grep -v '^fail$' "$f" >"$ok" || true
	fails=$(grep -c '^fail$' "$f" || true)
	if [[ ! -s $ok ]]; then
		rm -f "$ok"
		echo "nan nan nan nan $fails"
		return 0
	fi
	local cpu rss wall wmax
	cpu=$(awk '{printf "%.1f\n", ($1+$2)*1000}' "$ok" | stat_median)
	rss=$(awk '{print $3}' "$ok" | stat_median)
	wall=$(awk '{printf "%.0f\n", $4*1000}' "$ok" | stat_median)
	wmax=$(awk '{printf "%.0f\n", $4*1000}' "$ok" | stat_max)
	rm -f "$ok"
	echo "$cpu $rss $wall $wmax $fails"
}

# time_runs N NS STDIN CMD...: N runs of one command; prints what time_stats prints
time_runs() {
	local n=$1 name
	shift
	name=one-$RANDOM$RANDOM
	cmd_save "$name" "$@"
	time_interleaved "$n" "$name"
	time_stats "$name"
}

# section_file NAME: where a section writes its markdown
section_file() { echo "$BENCH_SECTIONS/$1.md"; }

# not_measured SECTION TITLE WHY: the honest entry for a figure that could not be taken
not_measured() {
	{
		echo "## $2"
		echo
		echo "not measured: $3"
		echo
	} >"$(section_file "$1")"
	bench_log "$2: not measured: $3"
}
