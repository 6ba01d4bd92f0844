#!/usr/bin/env python3
"""A webhook receiver for the tests of watch-devices: plain HTTP or HTTPS (a
certificate made by the test's own throwaway CA), on a loopback address of the test's
own network namespace. Each POST is appended to --log as one JSON line: the path, the
phonehome headers, the body, and whether the X-Phonehome-Signature-256 header is the
HMAC-SHA256 of the body under --secret (checked here, independently of the Rust code).

The answer follows --mode-file, read at each request: "ok" (or no file) 200; "fail"
503 with a two-line body; "slow" waits 30 s first. Stopping the process is how a test
makes the receiver "down".

usage: receiver.py --port N --log FILE [--host ADDR] [--cert PEM --key PEM]
                   [--secret FILE] [--mode-file FILE]
"""
import argparse
import hashlib
import hmac
import http.server
import json
import ssl
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--secret")
    ap.add_argument("--mode-file")
    args = ap.parse_args()
    secret = None
    if args.secret:
        with open(args.secret, "rb") as f:
            secret = f.read().rstrip(b"\r\n")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            mode = "ok"
            if args.mode_file:
                try:
                    with open(args.mode_file) as f:
                        mode = f.read().strip() or "ok"
                except OSError:
                    pass
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            sig = self.headers.get("X-Phonehome-Signature-256")
            ok = None
            if secret is not None:
                want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
                ok = sig is not None and hmac.compare_digest(sig, want)
            rec = {
                "path": self.path,
                "event": self.headers.get("X-Phonehome-Event"),
                "delivery": self.headers.get("X-Phonehome-Delivery"),
                "content_type": self.headers.get("Content-Type"),
                "title": self.headers.get("Title"),
                "priority": self.headers.get("Priority"),
                "authorization": self.headers.get("Authorization"),
                "signature": sig,
                "signature_ok": ok,
                "mode": mode,
                "body": body.decode("utf-8", "replace"),
            }
            with open(args.log, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if mode == "slow":
                time.sleep(30)
            code, text = (200, b"ok\n") if mode != "fail" else (503, b"maintenance until 10:00\nsecond line\n")
            self.send_response(code)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

    srv = http.server.HTTPServer((args.host, args.port), Handler)
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
