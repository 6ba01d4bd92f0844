# shellcheck shell=bash
# The benchmark's own sandbox: a mount, network and pid namespace, so that every process
# it starts dies with it and nothing listens outside; and how CPU is read off sshd.

# Called by bench/run outside: runs the script again inside the namespaces. The inside
# sets up the lab's private mounts and network (tests/e2e/lib.sh) itself.
# Killed (TERM, INT), the bench takes the sandbox with it: unshare --fork blocks those
# signals while it waits, so it gets SIGKILL, which --kill-child passes on to everything
# inside (sshd, the lab's cron loops, the agents).
sandbox_run_inner() {
	unshare --mount --net --pid --fork --kill-child --mount-proc --propagation private "$@" &
	local sandbox=$!
	trap 'kill -KILL "$sandbox" 2>/dev/null; exit 130' INT TERM
	wait "$sandbox"
	local rc=$?
	trap - INT TERM
	return "$rc"
}

# Total CPU (ms) of a process and every child it reaped: utime+stime+cutime+cstime.
# sshd's listener reaps each connection's process, which reaps the session and the forced
# command, so the listener's counters cover the whole login once it is over.
proc_tree_cpu_ms() {
	local tck
	tck=$(getconf CLK_TCK)
	awk -v t="$tck" '{ sub(/^.*\) /, ""); printf "%.0f\n", ($12+$13+$14+$15)*1000/t }' "/proc/$1/stat"
}

# Wait (up to 5 s) until the listener has no child left (every login reaped).
sshd_quiet() {
	local pid=$1 i
	for ((i = 0; i < 100; i++)); do
		[[ -z $(pgrep -P "$pid") ]] && return 0
		sleep 0.05
	done
	return 1
}
