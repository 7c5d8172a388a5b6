"""A gRPC server with TLS for tests/grpc.rs: service test.Echo, generic
handlers on raw bytes (no generated code). Every call must carry
`authorization: Bearer <token>` with a token not listed in the refused
file (one per line, read on every call), else it fails UNAUTHENTICATED
before any message; a call that passes gets the token back in the
`x-seen-token` trailer.

    server.py CERT_PEM KEY_PEM REFUSED_FILE

prints `PORT <n>` once it listens on 127.0.0.1:<n>, then serves until
killed.
"""

import sys
from concurrent import futures

import grpc

LIMIT = 64 * 1024 * 1024


def main():
    cert_path, key_path, refused_path = sys.argv[1:4]
    with open(cert_path, "rb") as f:
        cert = f.read()
    with open(key_path, "rb") as f:
        key = f.read()

    def check(ctx):
        md = dict(ctx.invocation_metadata())
        auth = md.get("authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        try:
            with open(refused_path) as f:
                refused = {line.strip() for line in f if line.strip()}
        except FileNotFoundError:
            refused = set()
        if not token or token in refused:
            print(f"REFUSED {token or '-'}", flush=True)
            ctx.abort(grpc.StatusCode.UNAUTHENTICATED, "token missing or refused")
        print(f"ACCEPTED {token}", flush=True)
        ctx.set_trailing_metadata((("x-seen-token", token),))

    def unary(req, ctx):
        check(ctx)
        return req

    def server_stream(req, ctx):
        # The request says how many messages of how many bytes: "N SIZE".
        check(ctx)
        n, size = (int(x) for x in req.decode().split())
        for i in range(n):
            yield bytes([i % 256]) * size

    def client_stream(it, ctx):
        check(ctx)
        count = total = 0
        for m in it:
            count += 1
            total += len(m)
        return f"{count} {total}".encode()

    def bidi(it, ctx):
        check(ctx)
        for m in it:
            yield m

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        options=[
            ("grpc.max_send_message_length", LIMIT),
            ("grpc.max_receive_message_length", LIMIT),
        ],
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Echo", handlers),)
    )
    port = server.add_secure_port(
        "127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)])
    )
    server.start()
    print(f"PORT {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
