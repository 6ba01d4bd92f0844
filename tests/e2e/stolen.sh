# shellcheck shell=bash
# shellcheck disable=SC2016 # the PWNED-$((6*7)) markers are meant for the remote shell
# What a stolen device key can do against the real sshd (docs/THREATS.md cases 1, 2 and 5):
# each attempt is made with the OpenSSH client from the server's own loopback, and each
# refusal is proven by its effect (no command output, nothing listening, no data through
# a forward), not by an exit status alone. Sourced after lib.sh.

# The thief's ssh: the device's key, its account, the server's loopback. thief_argv
# sets THIEF, so that a backgrounded "${THIEF[@]}" ... & has the real process in $!.
thief_argv() {
    THIEF=(ip netns exec srv timeout 20 ssh -F /dev/null -i "$LAB/$1/id_openssh" -p "$DEVICE_PORT" -o IdentitiesOnly=yes
        -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
        -o LogLevel=ERROR -o KexAlgorithms=curve25519-sha256 -o ConnectTimeout=5)
}

thief() {
    local dev=$1
    shift
    thief_argv "$dev"
    "${THIEF[@]}" "$@"
}

account_of() { echo "device$(dev_id "$1")"; }

# A service on the server's loopback that a device must never reach.
SECRET=server-only-secret-4711
secret_service_start() {
    mkdir -p "$LAB"/www
    echo "$SECRET" >"$LAB"/www/index.html
    ip netns exec srv busybox httpd -f -p 127.0.0.1:18080 -h "$LAB"/www &
    echo $! >"$LAB"/www.pid
    wait_until 5 tcp_open srv 127.0.0.1 18080
}

secret_service_stop() {
    kill "$(cat "$LAB"/www.pid)" 2>/dev/null
    wait "$(cat "$LAB"/www.pid)" 2>/dev/null
}

# A command through the device account must not run: no marker in the output.
t1_command() {
    local dev=$1 name=$2
    shift 2
    local out
    out=$(thief "$dev" "$(account_of "$dev")@127.0.0.1" "$@" </dev/null 2>&1)
    case $out in
    *PWNED-42*) fail "$name: the command ran: $out" ;;
    *) pass "$name: refused" ;;
    esac
}

# No command: sshd would start the login shell, which would read commands from stdin.
t1_shell_stdin() {
    local dev=$1 out
    out=$(echo 'echo PWNED-$((6*7))' | thief "$dev" -T "$(account_of "$dev")@127.0.0.1" 2>&1)
    case $out in
    *PWNED-42*) fail "THREATS 1 login shell: a shell ran stdin" ;;
    *) pass "THREATS 1 login shell (no command, commands on stdin): refused" ;;
    esac
}

t1_pty() {
    local dev=$1 out
    out=$(thief "$dev" -tt "$(account_of "$dev")@127.0.0.1" 'echo PWNED-$((6*7))' </dev/null 2>&1)
    case $out in
    *PWNED-42*) fail "THREATS 1 pty (-tt): the command ran" ;;
    *"PTY allocation request failed"*) pass "THREATS 1 pty (-tt): no pty, no command" ;;
    *) fail "THREATS 1 pty (-tt): expected 'PTY allocation request failed', got: $out" ;;
    esac
}

t1_sftp() {
    local dev=$1 out rc=0
    printf 'ls /\npwd\n' >"$LAB"/sftp.batch
    out=$(in_ns srv timeout 20 sftp -F /dev/null -b "$LAB"/sftp.batch -i "$LAB/$dev/id_openssh" -P "$DEVICE_PORT" -o IdentitiesOnly=yes \
        -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o LogLevel=ERROR "$(account_of "$dev")@127.0.0.1" </dev/null 2>&1) || rc=$?
    case $out in
    *"Remote working directory"* | */etc* | */usr*) fail "THREATS 1 sftp: a session opened: $out" ;;
    *) if [ "$rc" != 0 ]; then pass "THREATS 1 sftp: refused (exit $rc)"; else fail "THREATS 1 sftp: exit 0: $out"; fi ;;
    esac
}

t1_local_forward() {
    local dev=$1 pid got
    thief_argv "$dev"
    "${THIEF[@]}" -N -L 127.0.0.1:18081:127.0.0.1:18080 "$(account_of "$dev")@127.0.0.1" \
        </dev/null >"$LAB"/thief-L.log 2>&1 &
    pid=$!
    # The local end listens on the thief's side whatever sshd decides; what matters is
    # whether data from the server's loopback service comes back through it.
    wait_until 10 tcp_open srv 127.0.0.1 18081
    got=$(http_get srv 18081)
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    case $got in
    *"$SECRET"*) fail "THREATS 1 -L: the server's loopback service answered through the device key" ;;
    *) pass "THREATS 1 -L: nothing came through the forward" ;;
    esac
}

t1_stdio_forward() {
    local dev=$1 got
    got=$(printf 'GET / HTTP/1.0\r\n\r\n' |
        thief "$dev" -W 127.0.0.1:18080 "$(account_of "$dev")@127.0.0.1" 2>&1)
    case $got in
    *"$SECRET"*) fail "THREATS 1 -W: the server's loopback service answered" ;;
    *) pass "THREATS 1 -W: nothing came through" ;;
    esac
}

# run_forward NAME SPEC...: start `ssh -N -R SPEC` with ExitOnForwardFailure and report
# "refused" if it exits by itself within 8 s, "accepted" if it is still holding on.
# Prints the result word; leaves no process behind.
run_forward() {
    local dev=$1
    shift
    local pid
    thief_argv "$dev"
    "${THIEF[@]}" -N -o ExitOnForwardFailure=yes "$@" "$(account_of "$dev")@127.0.0.1" \
        </dev/null >>"$LAB"/thief-R.log 2>&1 &
    pid=$!

    for _ in $(seq 1 40); do
        if proc_gone "$pid"; then
            wait "$pid" 2>/dev/null
            echo refused
            return
        fi
        sleep 0.2
    done
    echo accepted
    echo "$pid" >"$LAB"/thief-R.pid
}

kill_forward() {
    local pid
    pid=$(cat "$LAB"/thief-R.pid 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -f "$LAB"/thief-R.pid
}

# t2_refused NAME SPEC: the -R must be refused and nothing may listen on PORT.
t2_refused() {
    local dev=$1 name=$2 port=$3 spec=$4 r
    r=$(run_forward "$dev" -R "$spec")
    if [ "$r" = accepted ]; then
        kill_forward
        fail "$name (-R '$spec'): accepted"
    elif [ -n "$(srv_listeners "$port")" ]; then
        fail "$name (-R '$spec'): refused, yet port $port is listening: $(srv_listeners "$port")"
    else
        pass "$name (-R '$spec'): refused, port $port not listening"
    fi
}

# The whole matrix. DEV's key is stolen; OWN is a port requested for DEV (and not in
# use), OTHER a port requested for another device (not in use), NONE a port nobody
# requested.
stolen_matrix() {
    local dev=$1 own=$2 other=$3 none=$4 r
    secret_service_start || fail "setup: the server's loopback service did not start"
    case $(http_get srv 18080) in
    *"$SECRET"*) pass "control: the server's loopback service answers on the server" ;;
    *) fail "control: the server's loopback service does not answer: the -L/-W checks would prove nothing" ;;
    esac

    t1_command "$dev" "THREATS 1 shell command" 'echo PWNED-$((6*7))'
    t1_command "$dev" "THREATS 1 command after poll" 'poll; echo PWNED-$((6*7))'
    t1_shell_stdin "$dev"
    t1_pty "$dev"
    t1_sftp "$dev"
    t1_local_forward "$dev"
    t1_stdio_forward "$dev"

    r=$(run_forward "$dev" -R /tmp/phonehome-stolen.sock:127.0.0.1:22)
    [ "$r" = accepted ] && kill_forward
    if [ "$r" = refused ] && [ ! -e /tmp/phonehome-stolen.sock ]; then
        pass "THREATS 1 -R of a Unix socket: refused, no socket"
    else
        fail "THREATS 1 -R of a Unix socket: $r, socket $(ls -l /tmp/phonehome-stolen.sock 2>&1)"
    fi

    # The positive control: the requested port with the listen host the agent uses.
    # Without it, every "refused" below could be an artefact of a broken harness.
    r=$(run_forward "$dev" -R "localhost:$own:127.0.0.1:22")
    if [ "$r" = accepted ] && wait_until 5 port_held "$own"; then
        pass "control: -R localhost:$own (requested) is accepted and listens"
    else
        fail "control: -R localhost:$own (requested) should work: $r; $(tail -n 3 "$LAB"/thief-R.log)"
    fi
    kill_forward
    wait_until 5 port_free "$own"

    local host
    for host in localhost 127.0.0.1 '[::1]' 0.0.0.0 ''; do
        t2_refused "$dev" "THREATS 2 another device's port, host '$host'" "$other" "$host:$other:127.0.0.1:22"
        t2_refused "$dev" "THREATS 2 unrequested port, host '$host'" "$none" "$host:$none:127.0.0.1:22"
    done
    for host in 127.0.0.1 '[::1]' 0.0.0.0 ''; do
        t2_refused "$dev" "THREATS 2 requested port, other host '$host'" "$own" "$host:$own:127.0.0.1:22"
    done
    r=$(run_forward "$dev" -R "localhost:0:127.0.0.1:22")
    [ "$r" = accepted ] && kill_forward
    if [ "$r" = refused ]; then pass "THREATS 2 port 0 (server-allocated): refused"; else fail "THREATS 2 port 0: accepted"; fi
    r=$(run_forward "$dev" -R "localhost:65536:127.0.0.1:22")
    [ "$r" = accepted ] && kill_forward
    if [ "$r" = refused ]; then pass "THREATS 2 port 65536: refused"; else fail "THREATS 2 port 65536: accepted"; fi
    secret_service_stop
}

# THREATS 5: remove-device while the key holds a tunnel open: the tunnel is cut, the
# port freed, and the key no longer logs in.
stolen_remove() {
    local dev=$1 own=$2 r out
    r=$(run_forward "$dev" -R "localhost:$own:127.0.0.1:22")
    if [ "$r" != accepted ] || ! wait_until 5 port_held "$own"; then
        fail "THREATS 5 setup: the tunnel on $own did not open ($r)"
        return
    fi
    local pid
    pid=$(cat "$LAB"/thief-R.pid)
    out=$(in_ns srv remove-device "$(dev_id "$dev")" 2>&1) ||
        fail "THREATS 5 remove-device failed: $out"
    if wait_until 10 proc_gone "$pid" && wait_until 5 port_free "$own"; then
        pass "THREATS 5 remove-device cut the open tunnel (port $own free)"
    else
        fail "THREATS 5 remove-device left the tunnel open: $(srv_listeners "$own")"
    fi
    kill_forward
    out=$(thief "$dev" "$(account_of "$dev")@127.0.0.1" poll </dev/null 2>&1)
    case $out in
    *"Permission denied"*) pass "THREATS 5 the removed key no longer logs in" ;;
    *) fail "THREATS 5 the removed key: expected 'Permission denied', got: $out" ;;
    esac
}
