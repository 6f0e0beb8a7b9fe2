"""Requests on one h2c connection (prior knowledge), one after another, for
tests/h2_attacks.rs: what a client sees when the upstream goes away between them.

    one_connection.py PORT BEFORE KILL_PID AFTER

Sends BEFORE GETs, kills KILL_PID (the origin), waits half a second, sends AFTER
more, all on one connection, and prints one line per request:
    N STATUS X-SEEN-ERROR
(X-SEEN-ERROR is that response header, "-" when absent; STATUS is "reset" for a
stream reset and "closed" when the connection ended). Bounded: 10 s per read.
"""

import os
import signal
import socket
import sys
import time

import h2.connection
import h2.events


def main():
    port, before, pid, after = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())

    def get():
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", "/x"), (":scheme", "http"),
                                (":authority", "localhost")], end_stream=True)
        sock.sendall(conn.data_to_send())
        status, seen = "closed", "-"
        while True:
            data = sock.recv(65536)
            if not data:
                return status, seen
            for e in conn.receive_data(data):
                if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                    h = dict(e.headers)
                    status = h.get(b":status", b"?").decode()
                    seen = h.get(b"x-seen-error", b"-").decode()
                elif isinstance(e, h2.events.DataReceived):
                    conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                elif isinstance(e, h2.events.StreamReset) and e.stream_id == sid:
                    sock.sendall(conn.data_to_send())
                    return "reset", seen
                elif isinstance(e, h2.events.StreamEnded) and e.stream_id == sid:
                    sock.sendall(conn.data_to_send())
                    return status, seen
            sock.sendall(conn.data_to_send())

    for n in range(before + after):
        if n == before:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        status, seen = get()
        print(n, status, seen, flush=True)
        if status == "closed":
            break


if __name__ == "__main__":
    main()
