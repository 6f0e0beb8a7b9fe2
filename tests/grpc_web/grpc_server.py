"""A native grpcio server (h2c) for the --grpc-web gateway: prints its port."""
import sys, time
from concurrent import futures
import grpc
def echo(req, ctx):
    md = dict(ctx.invocation_metadata())
    return b"echo:" + req + (b" md=" + md["x-hook"].encode() if "x-hook" in md else b"")
def stream(req, ctx):
    for i in range(3):
        yield b"part%d:" % i + req
def deny(req, ctx):
    ctx.abort(grpc.StatusCode.NOT_FOUND, "upstream says no")
server = grpc.server(futures.ThreadPoolExecutor(4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Echo", {
    "Say": grpc.unary_unary_rpc_method_handler(echo),
    "Deny": grpc.unary_unary_rpc_method_handler(deny),
    "Stream": grpc.unary_stream_rpc_method_handler(stream)}),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 60)
