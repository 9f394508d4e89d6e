#!/usr/bin/env python3
"""The cluster network of scripts/pod_runner.py, run inside containers on the Debian base's
python3-minimal (no json, no yaml: sockets, threads and files only).

    pod_network.py forward ENDPOINTS PORT...   one Service's cluster IP (kube-proxy)
    pod_network.py dns RECORDS                 the cluster DNS (kube-dns)

The runner rewrites ENDPOINTS and RECORDS as pods turn ready or not; both are re-read when
they change.
"""
import os
import signal
import socket
import sys
import threading


def forward(endpoints_path, ports):
    """A Service's cluster IP: accepts on each port, connects to the next ready endpoint that
    the runner wrote for it in ENDPOINTS (lines `PORT HOST:TARGET_PORT`), pumps both ways."""
    state = {"mtime": None, "table": {}, "next": {}}
    lock = threading.Lock()

    def endpoint(port):
        with lock:
            try:
                mtime = os.stat(endpoints_path).st_mtime_ns
            except OSError:
                mtime = None
            if mtime != state["mtime"]:
                table = {}
                if mtime is not None:
                    with open(endpoints_path) as f:
                        for line in f:
                            parts = line.split()
                            if len(parts) == 2:
                                host, _, target = parts[1].rpartition(":")
                                table.setdefault(int(parts[0]), []).append((host, int(target)))
                state["mtime"], state["table"] = mtime, table
            backends = state["table"].get(port, [])
            if not backends:
                return None
            n = state["next"].get(port, 0)
            state["next"][port] = n + 1
            return backends[n % len(backends)]

    def pump(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass

    def serve_connection(client, port):
        backend = endpoint(port)
        if backend is None:
            client.close()
            return
        try:
            upstream = socket.create_connection(backend, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        t = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        t.start()
        pump(client, upstream)
        t.join()
        client.close()
        upstream.close()

    def listen(port):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", port))
        server.listen(128)
        while True:
            client, _ = server.accept()
            threading.Thread(target=serve_connection, args=(client, port), daemon=True).start()

    for port in ports[1:]:
        threading.Thread(target=listen, args=(port,), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    listen(ports[0])


def dns(records_path):
    """The cluster DNS: A records from RECORDS (lines `NAME IP`, several lines for several
    addresses), re-read when it changes; NXDOMAIN for every other name, so resolvers walk
    their search domains as in a cluster (Docker's own DNS answers unknown names with errors
    that stop glibc's search)."""
    state = {"mtime": None, "records": {}}

    def records():
        try:
            mtime = os.stat(records_path).st_mtime_ns
        except OSError:
            return {}
        if mtime != state["mtime"]:
            table = {}
            with open(records_path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2:
                        table.setdefault(parts[0].lower().rstrip("."), []).append(parts[1])
            state["mtime"], state["records"] = mtime, table
        return state["records"]

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("0.0.0.0", 53))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        query, client = server.recvfrom(512)
        try:
            labels, i = [], 12
            while query[i]:
                labels.append(query[i + 1:i + 1 + query[i]].decode("ascii", "replace"))
                i += 1 + query[i]
            qtype = int.from_bytes(query[i + 1:i + 3], "big")
            question = query[12:i + 5]
        except IndexError:
            continue
        name = ".".join(labels).lower()
        addresses = records().get(name)
        flags = 0x8180 | (int.from_bytes(query[2:4], "big") & 0x0100)  # response, RA, the client's RD
        answers = b""
        count = 0
        if addresses is None:
            flags |= 3  # NXDOMAIN
        elif qtype in (1, 255):  # A, ANY; other types: no data
            for address in addresses:
                rdata = bytes(int(x) for x in address.split("."))
                answers += b"\xc0\x0c" + (1).to_bytes(2, "big") + (1).to_bytes(2, "big") + (5).to_bytes(4, "big") \
                    + len(rdata).to_bytes(2, "big") + rdata
                count += 1
        header = query[0:2] + flags.to_bytes(2, "big") + (1).to_bytes(2, "big") + count.to_bytes(2, "big") + b"\0\0\0\0"
        server.sendto(header + question + answers, client)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "forward":
        forward(sys.argv[2], [int(p) for p in sys.argv[3:]])
    elif len(sys.argv) > 2 and sys.argv[1] == "dns":
        dns(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
