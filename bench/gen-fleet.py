#!/usr/bin/env python3
"""Synthetic fleet for the list-devices benchmark (bench/run section 4).

Writes, under ROOT, a server registry of N devices in the exact format the server tools
read (var/lib/phonehome/devices.json: id, alias, key, fingerprint, created), the
accounts of a real server (etc/passwd and etc/group with every device's account), the
gate's status file for each (var/lib/phonehome/status/<id>/status.json: heartbeat and
last report), a few devices with requests, and an sshd log
of about SIZE MiB in two forms: an auth.log of ISO-timestamped syslog lines and a
`journalctl -o json` export of about the same size (JSON lines are about five times
longer, so it carries an evenly spread fifth of the events). The mix is what a server sees: every
device polling once a minute (Accepted publickey with the device's real fingerprint,
then the disconnect lines), failed logins, scanners' invalid users, and forged pre-auth
user names that carry a whole "Accepted publickey for device..." text. FORGED devices
are registered but never poll: they appear only in forged lines, so list-devices must
show them never-seen.

usage: gen-fleet.py ROOT N FORGED SIZE_MIB
Prints "events devices_polling forged_lines" on stdout. Also writes ROOT/auth.more: 1 MiB
of later polls, for the incremental run (appended to auth.log by the benchmark).
"""
import base64
import hashlib
import json
import os
import random
import sys
import time


def key_and_fp(rng):
    raw = bytes(rng.getrandbits(8) for _ in range(32))
    name = b"ssh-ed25519"
    blob = len(name).to_bytes(4, "big") + name + (32).to_bytes(4, "big") + raw
    fp = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return "ssh-ed25519 " + base64.b64encode(blob).decode(), fp


def main():
    root, n, forged, size_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(5)
    now = int(time.time())
    lib = os.path.join(root, "var/lib/phonehome")
    os.makedirs(lib, exist_ok=True)
    os.makedirs(os.path.join(root, "etc/phonehome"), exist_ok=True)
    with open(os.path.join(root, "etc/phonehome/server.conf"), "w") as f:
        f.write("poll_interval = 60\nlog_hosts = srv\n")
    devs = []
    records = []
    for i in range(n + forged):
        dev_id = "%012x" % (0x02AA00000000 + i)
        key, fp = key_and_fp(rng)
        records.append({"id": dev_id, "alias": None, "key": key, "fingerprint": fp, "created": now - 86400})
        devs.append((dev_id, fp, "10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)))
    path = os.path.join(lib, "devices.json")
    with open(path, "w") as f:
        json.dump({"devices": records}, f)
    os.chmod(path, 0o600)
    # a real server's accounts: the base system, then one account per device
    etc = os.path.join(root, "etc")
    with open(os.path.join(etc, "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
        f.write("sshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n")
        for i, (dev_id, _, _) in enumerate(devs):
            f.write("device%s:x:%d:998:phonehome device:/var/lib/phonehome/status/%s:/bin/sh\n"
                    % (dev_id, 20000 + i, dev_id))
    with open(os.path.join(etc, "group"), "w") as f:
        f.write("root:x:0:\nphonehome-devices:x:998:\n")
    polling, ghosts = devs[:n], devs[n:]
    # the gate's last heartbeats: older than the log, so that with a log the log decides
    # (and is checked), and the gate-only run still reads 10,000 records
    target = size_mib * 1024 * 1024
    per_poll = 3 * 130
    polls = max(n, target // per_poll)
    span = max(120, (polls // n) * 60)  # seconds covered: one poll a minute per device
    start = now - span
    for i, (dev_id, _, ip) in enumerate(polling):
        d = os.path.join(lib, "status", dev_id)
        os.makedirs(d, exist_ok=True)
        seen = start - rng.randrange(60, 120)
        report = {"protocol": 2, "agent_version": "0.2.0", "client": "dbclient 2024.86",
                  "uptime_secs": rng.randrange(60, 10**7), "load1": 0.05, "mem_available_kb": 21000,
                  "tunnels": [], "inbox_errors": [], "last_error": None}
        with open(os.path.join(d, "status.json"), "w") as f:
            json.dump({"heartbeat": {"received": seen, "from": ip, "port": 40000, "report_error": None},
                       "report": {"received": seen, "report": report}}, f)
        if i % 100 == 0:
            # one device in a hundred has a tunnel requested
            req = os.path.join(lib, "requests")
            os.makedirs(req, exist_ok=True)
            with open(os.path.join(req, dev_id + ".json"), "w") as f:
                json.dump({"device": dev_id, "requests": [{"local": 22, "remote": 20000 + i // 100,
                                                           "created": now - 60, "expires": now + 3600}]}, f)

    plain = open(os.path.join(root, "auth.log"), "w")
    journal = open(os.path.join(root, "journal.json"), "w")
    boot = "%032x" % rng.getrandbits(128)
    pid = 1000
    events = 0
    forged_lines = 0
    size_plain = 0
    size_journal = 0
    buf_p, buf_j = [], []
    stamp = [None, ""]

    def emit(t, pid, msg):
        nonlocal size_plain, size_journal
        if stamp[0] != t:
            stamp[0], stamp[1] = t, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
        line = "%s.%06d+00:00 srv sshd[%d]: %s\n" % (stamp[1], pid % 1000000, pid, msg)
        buf_p.append(line)
        size_plain += len(line)
        if size_journal >= size_plain:
            return
        j = json.dumps({
            "__CURSOR": "s=%s;i=%x" % (boot[:16], events), "__REALTIME_TIMESTAMP": str(t * 1000000),
            "__MONOTONIC_TIMESTAMP": str((t - start) * 1000000), "_BOOT_ID": boot,
            "PRIORITY": "6", "SYSLOG_FACILITY": "4", "SYSLOG_IDENTIFIER": "sshd",
            "_PID": str(pid), "_UID": "0", "_GID": "0", "_COMM": "sshd", "_EXE": "/usr/sbin/sshd",
            "_CMDLINE": "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
            "_SYSTEMD_UNIT": "ssh.service", "_TRANSPORT": "syslog", "_HOSTNAME": "srv",
            "MESSAGE": msg}, separators=(",", ":")) + "\n"
        buf_j.append(j)
        size_journal += len(j)

    i = 0
    while size_plain < target:
        dev_id, fp, ip = polling[i % n]
        t = min(now, start + (i * span) // polls)
        pid += 1
        port = 30000 + (pid % 30000)
        r = rng.random()
        if r < 0.02:
            # a scanner
            emit(t, pid, "Invalid user admin from 203.0.113.%d port %d" % (pid % 250, port))
            emit(t, pid, "Connection closed by invalid user admin 203.0.113.%d port %d [preauth]" % (pid % 250, port))
        elif r < 0.03:
            # a forged pre-auth user name naming a never-polling device with its real fingerprint
            g_id, g_fp, _ = ghosts[pid % len(ghosts)] if ghosts else polling[0]
            name = "Accepted publickey for device%s from 198.51.100.9 port 1 ssh2: ED25519 %s" % (g_id, g_fp)
            emit(t, pid, "Invalid user %s from 203.0.113.7 port %d" % (name, port))
            emit(t, pid, "Connection closed by invalid user %s 203.0.113.7 port %d [preauth]" % (name, port))
            forged_lines += 2
        elif r < 0.04:
            # a device key that is not the registered one
            emit(t, pid, "Connection closed by authenticating user device%s %s port %d [preauth]" % (dev_id, ip, port))
        else:
            emit(t, pid, "Accepted publickey for device%s from %s port %d ssh2: ED25519 %s" % (dev_id, ip, port, fp))
            emit(t, pid, "Received disconnect from %s port %d:11: disconnected by user" % (ip, port))
            emit(t, pid, "Disconnected from user device%s %s port %d" % (dev_id, ip, port))
            i += 1
        events += 1
        if len(buf_p) > 20000:
            plain.write("".join(buf_p))
            journal.write("".join(buf_j))
            buf_p.clear()
            buf_j.clear()
    plain.write("".join(buf_p))
    journal.write("".join(buf_j))
    plain.close()
    journal.close()
    # 1 MiB of later polls, in the same form
    with open(os.path.join(root, "auth.more"), "w") as more:
        size, j = 0, 0
        while size < 1024 * 1024:
            dev_id, fp, ip = polling[j % n]
            t = now + 1 + j // 1000
            line = "%s.000000+00:00 srv sshd[%d]: Accepted publickey for device%s from %s port %d ssh2: ED25519 %s\n" % (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)), 90000 + j, dev_id, ip, 40000 + j % 20000, fp)
            more.write(line)
            size += len(line)
            j += 1
    print(events, min(i, n), forged_lines)


if __name__ == "__main__":
    main()
