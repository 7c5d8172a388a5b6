"""A gRPC client for tests/grpc.rs on an insecure channel (h2c prior
knowledge) to the proxy: runs the calls named on the command line and
prints one JSON line per call (its status, the `x-seen-token` trailer,
what came back).

    client.py HOST:PORT CALL...

CALL is unary, server_stream, client_stream, bidi (ping-pong: each
message is sent only once the previous one came back, which a proxy that
held back either direction would never let finish), large (a 16 MiB
message each way on a bidi call), or unrouted (a unary call to a service
no route serves).
"""

import hashlib
import json
import queue
import sys

import grpc

LIMIT = 64 * 1024 * 1024
TIMEOUT = 60


def trailer(call):
    for k, v in call.trailing_metadata() or ():
        if k == "x-seen-token":
            return v
    return None


def result(name, call=None, error=None, **extra):
    out = {"call": name, "status": "OK", "token": None}
    if error is not None:
        out["status"] = error.code().name
        out["details"] = error.details()
    elif call is not None:
        out["token"] = trailer(call)
    out.update(extra)
    return out


def run(channel, name):
    try:
        if name == "unary":
            m = channel.unary_unary("/test.Echo/Unary")
            resp, call = m.with_call(b"hello", timeout=TIMEOUT)
            return result(name, call, echoed=resp.decode())
        if name == "server_stream":
            m = channel.unary_stream("/test.Echo/ServerStream")
            call = m(b"5 100000", timeout=TIMEOUT)
            sizes = [len(r) for r in call]
            return result(name, call, sizes=sizes)
        if name == "client_stream":
            m = channel.stream_unary("/test.Echo/ClientStream")
            msgs = (bytes([i]) * 1000 * (i + 1) for i in range(10))
            resp, call = m.with_call(msgs, timeout=TIMEOUT)
            return result(name, call, counted=resp.decode())
        if name in ("bidi", "large"):
            m = channel.stream_stream("/test.Echo/Bidi")
            size = 16 * 1024 * 1024 if name == "large" else 10
            rounds = 2 if name == "large" else 20
            outbox = queue.Queue()
            outbox.put(b"a" * size)

            def requests():
                while True:
                    msg = outbox.get()
                    if msg is None:
                        return
                    yield msg

            call = m(requests(), timeout=TIMEOUT)
            got = []
            for resp in call:
                got.append(hashlib.sha256(resp).hexdigest()[:16])
                if len(got) == rounds:
                    outbox.put(None)
                else:
                    outbox.put(bytes([97 + len(got)]) * size)
            expect = [
                hashlib.sha256(bytes([97 + i]) * size).hexdigest()[:16]
                for i in range(rounds)
            ]
            return result(name, call, rounds=len(got), intact=got == expect)
        if name == "unrouted":
            m = channel.unary_unary("/other.Service/Call")
            resp, call = m.with_call(b"", timeout=TIMEOUT)
            return result(name, call)
        raise SystemExit(f"unknown call {name}")
    except grpc.RpcError as e:
        return result(name, error=e)


def main():
    target, calls = sys.argv[1], sys.argv[2:]
    options = [
        ("grpc.max_send_message_length", LIMIT),
        ("grpc.max_receive_message_length", LIMIT),
    ]
    with grpc.insecure_channel(target, options=options) as channel:
        for name in calls:
            print(json.dumps(run(channel, name)), flush=True)


if __name__ == "__main__":
    main()
