"""sonora's gRPC-web WSGI server (HTTP/1.x, wsgiref): prints its port; lives SECONDS."""
import sys, threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import make_server, WSGIServer, WSGIRequestHandler
import grpc
from sonora.wsgi import grpcWSGI
def echo(req, ctx):
    md = dict(ctx.invocation_metadata() or [])
    return b"echo:" + req + (b" md=" + md["x-hook"].encode() if "x-hook" in md else b"")
def stream(req, ctx):
    for i in range(3):
        yield b"part%d:" % i + req
app = grpcWSGI(None)
app.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Echo", {
    "Say": grpc.unary_unary_rpc_method_handler(echo, lambda b: b, lambda b: b),
    "Deny": grpc.unary_unary_rpc_method_handler(echo, lambda b: b, lambda b: b),
    "Stream": grpc.unary_stream_rpc_method_handler(stream, lambda b: b, lambda b: b)}),))
class S(ThreadingMixIn, WSGIServer):
    daemon_threads = True
class Q(WSGIRequestHandler):
    def log_message(self, *a): pass
srv = make_server("127.0.0.1", 0, app, server_class=S, handler_class=Q)
print(srv.server_port, flush=True)
threading.Timer(float(sys.argv[1]) if len(sys.argv) > 1 else 60, srv.shutdown).start()
srv.serve_forever()
