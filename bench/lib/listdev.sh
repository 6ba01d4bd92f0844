# shellcheck shell=bash
# Section 4: list-devices on a big fleet. bench/gen-fleet.py writes a registry of 10,000
# devices (plus 100 that never poll and appear only in forged pre-auth lines), the
# gate's records, and an sshd log as an ISO-syslog file and as a journald JSON export.
# Each input is timed against the raw-scan floor of the same bytes.

# ld_check JSON: "devices seen through the log / never-seen" from list-devices --json
ld_check() {
	python3 - "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))["devices"]
log = sum(1 for x in d if x.get("seen_by") == "sshd log")
never = sum(1 for x in d if x.get("state") == "never-seen")
print(log, never)
EOF
}

section_listdevices() {
	# reps: runs of each long input; quick_reps: of the sub-second rows (the gate's
	# records, the incremental run), whose medians need more runs to mean something
	local out n=$BENCH_DEVICES mib=$BENCH_LOG_MIB ghosts=100 reps=3 quick_reps=15
	out=$(section_file 4-listdevices)
	[[ $BENCH_MODE == quick ]] && reps=1 quick_reps=5
	local ld=$PHONEHOME_BIN_DIR/list-devices
	if [[ ! -x $ld ]]; then
		not_measured 4-listdevices "4. list-devices" "list-devices is not built (${BENCH_NO_SERVER_TOOLS:-see the error log})"
		return 0
	fi
	local R=$LAB/fleet
	mkdir -p "$R"
	bench_log "list-devices: generating $n devices and a $mib MiB log (plain and journald JSON)"
	local gen t0 t1
	t0=$(date +%s)
	gen=$(python3 "$BENCH_DIR/gen-fleet.py" "$R" "$n" "$ghosts" "$mib") ||
		bench_die "bench/gen-fleet.py failed"
	t1=$(date +%s)
	local events polled forged
	read -r events polled forged <<<"$gen"
	local plain=$R/auth.log journal=$R/journal.json
	local sp sj
	sp=$(stat -c %s "$plain")
	sj=$(stat -c %s "$journal")
	local -a rows=()
	# ld_measure [-n RUNS] [-p PRE] LABEL FLOOR_LABEL FLOOR_CMD... -- CMD...
	# PRE: a command run before each run of CMD, outside its figures
	ld_measure() {
		local runs=$reps pre=
		while [[ $1 == -[np] ]]; do
			if [[ $1 == -n ]]; then runs=$2; else pre=$2; fi
			shift 2
		done
		local label=$1 flabel=$2
		shift 2
		local -a floor=()
		while [[ $1 != -- ]]; do
			floor+=("$1")
			shift
		done
		shift
		local f s fw fr fc sw sr sc
		cmd_save ld_floor srv /dev/null "${floor[@]}"
		cmd_save ld_subject srv /dev/null "$@"
		[[ -z $pre ]] || cmd_pre ld_subject "$pre"
		time_interleaved "$runs" ld_floor ld_subject
		f=$(time_stats ld_floor)
		s=$(time_stats ld_subject)
		read -r fc fr fw _ <<<"$f"
		read -r sc sr sw _ <<<"$s"
		rows+=("| $label | $runs | $sw | $sc | $(thousands "$sr") | $flabel | $fw | $fc | $(thousands "$fr") | $(ratio "$sw" "$fw") | $(ratio "$sr" "$fr") |")
	}
	# ld_watch: watch-devices --once beside list-devices on the same fleet: a first run
	# (no state, no cursors), a run in which every device goes offline at once, and a
	# later run in which nothing changed. No webhook: detection, state, metrics file.
	local wd=$PHONEHOME_BIN_DIR/watch-devices W=$R/var/lib/phonehome/watch watch_events='?'
	ld_watch() {
		[[ -x $wd ]] || return 0
		bench_log "watch-devices: a first run, every device going offline, a run with no change ($reps runs each)"
		printf 'metrics_file = %s/phonehome.prom\n' "$R" >>"$R/etc/phonehome/server.conf"
		printf '#!/bin/sh\nrm -rf %s %s/var/cache/phonehome\nexec %s --root %s --once --log %s\n' \
			"$W" "$R" "$wd" "$R" "$plain" >"$R/watch-first"
		printf '#!/bin/sh\ncp %s/state-up.json %s/state.json && exec %s --root %s --once\n' \
			"$R" "$W" "$wd" "$R" >"$R/watch-all-offline"
		chmod 0755 "$R/watch-first" "$R/watch-all-offline"
		in_ns srv "$R/watch-first" >/dev/null 2>>"$BENCH_ERRLOG" && cp "$W/state.json" "$R/state-up.json"
		ld_measure "\`watch-devices --once --log auth.log\`, a first run (no state, no cursors)" "\`list-devices --no-cache --log auth.log\`" \
			"$ld" --root "$R" --no-cache --log "$plain" -- "$R/watch-first"
		in_ns srv "$R/watch-first" >/dev/null 2>>"$BENCH_ERRLOG"
		watch_events=$(in_ns srv "$R/watch-all-offline" 2>>"$BENCH_ERRLOG" | grep -c '^device.offline' || true)
		ld_measure "\`watch-devices --once\`, the gate's records alone: every device goes offline ($(thousands "$watch_events") events)" "\`list-devices --no-cache\`, the same records" \
			"$ld" --root "$R" --no-cache -- "$R/watch-all-offline"
		in_ns srv "$wd" --root "$R" --once >/dev/null 2>>"$BENCH_ERRLOG"
		ld_measure "\`watch-devices --once\`, the gate's records alone: nothing changed" "\`list-devices --no-cache\`, the same records" \
			"$ld" --root "$R" --no-cache -- "$wd" --root "$R" --once
	}
	bench_log "list-devices: timing the plain log, the journald export and the gate's records ($reps runs each)"
	ld_measure "\`list-devices --no-cache --log auth.log\` ($(thousands "$sp") B)" "\`grep -c 'Accepted publickey' auth.log\`" \
		grep -c 'Accepted publickey' "$plain" -- "$ld" --root "$R" --no-cache --log "$plain"
	# --full: the default's 256 MiB too, the first lines of the same log
	if [[ $mib -gt 256 ]]; then
		python3 - "$plain" "$R/auth256.log" <<'PY'
import sys
with open(sys.argv[1], 'rb') as f:
    data = f.read(256 << 20)
open(sys.argv[2], 'wb').write(data[:data.rfind(b'\n') + 1])
PY
		ld_measure "\`list-devices --no-cache --log auth256.log\` (its first $(thousands "$(stat -c %s "$R/auth256.log")") B)" "\`grep -c 'Accepted publickey' auth256.log\`" \
			grep -c 'Accepted publickey' "$R/auth256.log" -- "$ld" --root "$R" --no-cache --log "$R/auth256.log"
		rm -f "$R/auth256.log"
	fi
	ld_measure "\`list-devices --no-cache --log journal.json\` ($(thousands "$sj") B)" "\`grep -c 'Accepted publickey' journal.json\`" \
		grep -c 'Accepted publickey' "$journal" -- "$ld" --root "$R" --no-cache --log "$journal"
	ld_measure -n "$quick_reps" "\`list-devices\`, the gate's records alone ($n status.json, a passwd of $((n + ghosts)) accounts)" "\`cat\` of every status.json" \
		find "$R/var/lib/phonehome/status" -name status.json -exec cat '{}' + -- "$ld" --root "$R" --no-cache
	# incremental: a first run leaves the cursors; each timed run follows 1 MiB more log
	bench_log "list-devices: incremental runs over the $mib MiB log, 1 MiB more each time"
	in_ns srv "$ld" --root "$R" --log "$plain" >/dev/null 2>>"$BENCH_ERRLOG" || true
	# the append is made before each run, untimed: the figure is list-devices' alone
	printf '#!/bin/sh\nexec cat %s >>%s\n' "$R/auth.more" "$plain" >"$R/append"
	chmod 0755 "$R/append"
	ld_measure -n "$quick_reps" -p "$R/append" "\`list-devices --log auth.log\` again, the log 1 MiB longer (incremental)" "the records alone (\`--no-cache\`, no log)" \
		"$ld" --root "$R" --no-cache -- "$ld" --root "$R" --log "$plain"
	# how it grows: ten times the fleet (not in --quick)
	if [[ $BENCH_MODE != quick ]]; then
		local R2=$LAB/fleet100k n2=$((n * 10)) mib2=64
		mkdir -p "$R2"
		bench_log "list-devices: generating $n2 devices and a $mib2 MiB log"
		python3 "$BENCH_DIR/gen-fleet.py" "$R2" "$n2" "$ghosts" "$mib2" >/dev/null ||
			bench_die "bench/gen-fleet.py failed ($n2 devices)"
		ld_measure "\`list-devices\`, $(thousands "$n2") devices' records alone" "\`cat\` of every status.json" \
			find "$R2/var/lib/phonehome/status" -name status.json -exec cat '{}' + -- "$ld" --root "$R2" --no-cache
		ld_measure "\`list-devices --no-cache --log auth.log\`, $(thousands "$n2") devices, $mib2 MiB" "\`grep -c 'Accepted publickey' auth.log\`" \
			grep -c 'Accepted publickey' "$R2/auth.log" -- "$ld" --root "$R2" --no-cache --log "$R2/auth.log"
		rm -rf "$R2"
	fi
	local inc_ok
	in_ns srv "$ld" --root "$R" --log "$plain" --json >"$R/inc.json" 2>>"$BENCH_ERRLOG" || true
	in_ns srv "$ld" --root "$R" --log "$plain" --no-cache --json >"$R/full.json" 2>>"$BENCH_ERRLOG" || true
	if python3 - "$R/inc.json" "$R/full.json" <<'PY'; then inc_ok=yes; else inc_ok=NO; fi
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
key = lambda d: [(x["id"], x["state"], x["last_seen_unix"], x["from"]) for x in d["devices"]]
sys.exit(0 if key(a) == key(b) else 1)
PY
	ld_watch
	# what it concluded, from the plain log
	local check seen never
	in_ns srv "$ld" --root "$R" --no-cache --log "$plain" --json >"$R/out.json" 2>>"$BENCH_ERRLOG" || true
	check=$(ld_check "$R/out.json" 2>>"$BENCH_ERRLOG") || check="? ?"
	read -r seen never <<<"$check"
	# the scan rate: the log run's CPU time minus the gate-only run's (registry, records)
	local mbps gate_row
	gate_row=$(printf '%s\n' "${rows[@]}" | grep -F "the gate's records alone ($n status.json")
	mbps=$(awk -v b="$sp" -v r="${rows[0]}" -v g="$gate_row" 'BEGIN { split(r, c, "|"); split(g, d, "|")
		w = (c[5] - d[5]) / 1000; if (w > 0) printf "%.0f", b / 1048576 / w; else print "?" }')
	{
		echo "## 4. list-devices"
		echo
		echo "$n registered devices plus $ghosts that never poll, generated by \`bench/gen-fleet.py\`"
		echo "in $((t1 - t0)) s, in the server tools' formats: the registry (one file), a passwd and group"
		echo "holding every device's account, a status file per device (heartbeat and last report),"
		echo "requests for one device in a hundred, and a synthetic sshd log of $mib MiB (\`--quick\`:"
		echo "16 MiB, default: 256 MiB, \`--full\`: 1 GiB):"
		echo "$(thousands "$events") logins or attempts: every device polling once a minute (Accepted"
		echo "publickey with its real fingerprint, then the two disconnect lines), 2 % scanners"
		echo "(invalid users), 1 % keys that are not the registered one, 1 % forged pre-auth user"
		echo "names carrying a whole \"Accepted publickey for device… SHA256:<the real fingerprint>\""
		echo "text ($(thousands "$forged") lines, all naming the $ghosts never-polling devices). The same events as a"
		echo "\`journalctl -o json\` export of about the same size (an evenly spread fifth of them:"
		echo "JSON lines are five times longer). Files on tmpfs (no disk in the figures); wall time,"
		echo "CPU time (user + system, summed over threads) and peak RSS, the median of each row's runs,"
		echo "against the raw scan of the same input. list-devices scans a long plain log in ranges,"
		echo "one thread each, and reads the status files on threads of their own, up to 4 of each"
		echo "($(nproc) cores here); \`grep -c\` is one thread."
		echo
		echo "| input | runs | wall ms | CPU ms | peak RSS KiB | floor | wall ms | CPU ms | peak RSS KiB | × wall | × RSS |"
		echo "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
		printf '%s\n' "${rows[@]}"
		echo
		echo "list-devices scans the plain log at about $mbps MiB per CPU second (the log's size over the"
		echo "plain-log run's CPU time minus the gate-only run's, which is the cost of the registry, the"
		echo "passwd and a status file per device; grep's rate is the floor: it only counts, where"
		echo "list-devices parses and checks every login line — host, program, anchoring, key). What"
		echo "it concluded from the plain log: $seen devices last seen through the log (of $polled"
		echo "polling), $never never-seen (the $ghosts forged-only devices must be among them: a forged"
		echo "line is no heartbeat). The incremental run reads only what the log gained since the last"
		echo "run (cursors in var/cache/phonehome); 1 MiB of later polls is appended to the log before"
		echo "each of its runs, outside the figures; its answer equals a full scan's: $inc_ok."
		echo
		if [[ -x $wd ]]; then
			echo "watch-devices reads the fleet through the same code (\`fleet.rs\`), then compares every"
			echo "device with its last run, commits its state (one file, fsynced) and writes the metrics"
			echo "file; no webhook is configured here, so queueing (one small file per event and webhook)"
			echo "is not in these figures. Its first run only records. In the second row each run starts"
			echo "from the state of a run over the log, in which the devices whose last login was within"
			echo "offline_after were up; the gate's records alone date every heartbeat earlier, so each"
			echo "run turns those $(thousands "$watch_events") devices offline at once and makes that many events:"
			echo "what a failure of the server's network would cost."
			echo
		fi
		echo "Reproduce: \`bench/run\` (section 4), \`bench/run --full\` for the 1 GiB log; or by hand"
		echo "\`python3 bench/gen-fleet.py DIR 10000 100 1024\` then"
		echo "\`/usr/bin/time -v list-devices --root DIR --log DIR/auth.log\`."
		echo
	} >"$out"
	rm -f "$plain" "$journal" "$R/auth.more" "$R/more.sink"
}
