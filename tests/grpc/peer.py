#!/usr/bin/env python3
"""Real gRPC (grpcio) and HTTP/2 (h2) peers for the end-to-end tests and the bench.

    peer.py serve --version canary [--code UNAVAILABLE] [--how trailers-only]
        A gRPC server on 127.0.0.1 (an ephemeral port), printing `ready <port>` once
        it listens. Service `canary.Probe`, methods `Unary` (unary-unary) and `Stream`
        (unary-stream), with bytes in and out (no protoc). It answers with its
        version name as the message and in the metadata `x-served-by`. The request
        metadata `x-reply-code` / `x-reply-how` override the server's defaults:
          trailers-only   the status alone: one HEADERS frame with grpc-status
                          (for OK: a normal answer, one message, then trailers)
          after-metadata  initial metadata first, then the status in the trailers
          after-message   (Stream) one message first, then the status in the trailers

    peer.py serve-broken --version canary
        An HTTP/2 server (the h2 library, not gRPC) that answers gRPC calls the way a
        broken server or a proxy in between might, by the request header `x-break`:
          no-status   HEADERS 200 (application/grpc), one message, END_STREAM without trailers
          reset       HEADERS 200, one message, then RST_STREAM
          http-503    HEADERS 503 (text/plain) without grpc-status, END_STREAM
          http-404    HEADERS 404 (text/plain) without grpc-status, END_STREAM
        Prints `ready <port>` like `serve`.

    peer.py client
        Reads one JSON request a line on stdin, writes one JSON answer a line:
          {"op": "grpc", "target": "127.0.0.1:P", "method": "Unary"|"Stream",
           "metadata": [[k, v], ...], "timeout": 5}
            -> {"code": "OK", "details": ..., "initial": {...}, "trailing": {...},
                "messages": [...]}
          {"op": "h2", "target": "127.0.0.1:P", "headers": [[k, v], ...], "body": "<hex>"}
            -> {"headers": [[k, v]...], "end_stream_on_headers": bool,
                "body": "<text>", "trailers": [[k, v]...] | null}
          {"op": "load", "target": ..., "method": ..., "metadata": ..., "calls": N}
            -> {"codes": {"OK": n, ...}, "seconds": s}   (N sequential calls, bench)
"""

import argparse
import json
import socket
import sys
import time
from concurrent import futures

import grpc

SERVICE = "canary.Probe"
HOWS = ("trailers-only", "after-metadata", "after-message")


def identity(b):
    return b


def code_by_name(name):
    try:
        return grpc.StatusCode[name]
    except KeyError:
        raise SystemExit(f"unknown gRPC code {name!r}")


def serve(args):
    default_code = code_by_name(args.code)

    def wanted(context):
        md = dict(context.invocation_metadata())
        code = code_by_name(md["x-reply-code"]) if "x-reply-code" in md else default_code
        how = md.get("x-reply-how", args.how)
        return code, how

    served_by = (("x-served-by", args.version),)
    message = args.version.encode()

    def unary(request, context):
        code, how = wanted(context)
        if code == grpc.StatusCode.OK:
            context.set_trailing_metadata(served_by)
            return message
        if how == "after-metadata":
            context.send_initial_metadata(served_by)
        else:
            # Trailers-only: no initial metadata, no message; the status and this
            # metadata travel in one HEADERS frame.
            context.set_trailing_metadata(served_by)
        context.abort(code, f"{args.version} answers {code.name} {how}")

    def stream(request, context):
        code, how = wanted(context)
        context.set_trailing_metadata(served_by)
        if code == grpc.StatusCode.OK or how == "after-message":
            yield message
        if code != grpc.StatusCode.OK:
            context.abort(code, f"{args.version} answers {code.name} {how}")

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=identity, response_serializer=identity
            ),
            "Stream": grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=identity, response_serializer=identity
            ),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"ready {port}", flush=True)
    # Exits when the test closes stdin (or kills this process).
    try:
        sys.stdin.read()
    finally:
        server.stop(0)


class Client:
    def __init__(self):
        self.channels = {}

    def channel(self, target, authority=None):
        # authority: the :authority to send instead of the target (the host a
        # caller in a mesh names, which canary-router's `hosts` matches).
        key = (target, authority)
        if key not in self.channels:
            options = [("grpc.default_authority", authority)] if authority else []
            self.channels[key] = grpc.insecure_channel(target, options=options)
        return self.channels[key]

    def call(self, target, method, metadata, timeout, authority=None):
        channel = self.channel(target, authority)
        path = f"/{SERVICE}/{method}"
        metadata = [tuple(kv) for kv in metadata]
        messages = []
        if method == "Stream":
            call = channel.unary_stream(
                path, request_serializer=identity, response_deserializer=identity
            )(b"probe", metadata=metadata, timeout=timeout)
            try:
                for m in call:
                    messages.append(m.decode(errors="replace"))
            except grpc.RpcError:
                pass
        else:
            fn = channel.unary_unary(
                path, request_serializer=identity, response_deserializer=identity
            )
            try:
                answer, call = fn.with_call(b"probe", metadata=metadata, timeout=timeout)
                messages.append(answer.decode(errors="replace"))
            except grpc.RpcError as e:
                call = e
        return {
            "code": call.code().name,
            "details": call.details() or "",
            "initial": dict(call.initial_metadata() or ()),
            "trailing": dict(call.trailing_metadata() or ()),
            "messages": messages,
        }

    def grpc(self, req):
        return self.call(
            req["target"],
            req.get("method", "Unary"),
            req.get("metadata", []),
            req.get("timeout", 10),
            req.get("authority"),
        )

    def load(self, req):
        codes = {}
        start = time.monotonic()
        for _ in range(int(req["calls"])):
            code = self.call(
                req["target"], req.get("method", "Unary"), req.get("metadata", []), req.get("timeout", 60)
            )["code"]
            codes[code] = codes.get(code, 0) + 1
        return {"codes": codes, "seconds": time.monotonic() - start}


def serve_broken(args):
    import threading

    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    served_by = ("x-served-by", args.version)
    message = b"\x00" + len(args.version).to_bytes(4, "big") + args.version.encode()

    def answer(conn, stream_id, headers):
        how = headers.get("x-break", "no-status")
        if how in ("http-503", "http-404"):
            conn.send_headers(stream_id, [(":status", how[5:]), ("content-type", "text/plain"), served_by],
                              end_stream=True)
            return
        conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc"), served_by])
        if how == "reset":
            conn.send_data(stream_id, message)
            conn.reset_stream(stream_id, error_code=2)  # INTERNAL_ERROR
        else:
            conn.send_data(stream_id, message, end_stream=True)

    def handle(sock):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        requests = {}
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        requests[event.stream_id] = {k.decode(): v.decode() for k, v in event.headers}
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id in requests:
                        answer(conn, event.stream_id, requests.pop(event.stream_id))
                sock.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            return
        finally:
            sock.close()

    def accept():
        while True:
            sock, _ = listener.accept()
            threading.Thread(target=handle, args=(sock,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    print(f"ready {listener.getsockname()[1]}", flush=True)
    sys.stdin.read()


def h2_request(req):
    """One HTTP/2 request with prior knowledge (h2c), by the h2 library."""
    import h2.config
    import h2.connection
    import h2.events

    host, port = req["target"].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    body = bytes.fromhex(req.get("body", ""))
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, [tuple(kv) for kv in req["headers"]], end_stream=not body)
    if body:
        conn.send_data(stream_id, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    answer = {"headers": None, "end_stream_on_headers": False, "body": "", "trailers": None}
    data = b""
    done = False
    while not done:
        chunk = sock.recv(65536)
        if not chunk:
            break
        for event in conn.receive_data(chunk):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                answer["headers"] = [[k.decode(), v.decode()] for k, v in event.headers]
                if event.stream_ended is not None:
                    answer["end_stream_on_headers"] = True
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                data += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.TrailersReceived) and event.stream_id == stream_id:
                answer["trailers"] = [[k.decode(), v.decode()] for k, v in event.headers]
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                done = True
            elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
                answer["reset"] = int(event.error_code)
                done = True
        sock.sendall(conn.data_to_send())
    sock.close()
    answer["body"] = data.decode(errors="replace")
    return answer


def client(_args):
    c = Client()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            if req["op"] == "grpc":
                out = c.grpc(req)
            elif req["op"] == "h2":
                out = h2_request(req)
            elif req["op"] == "load":
                out = c.load(req)
            else:
                out = {"error": f"unknown op {req['op']!r}"}
        except Exception as e:  # the test reads the error and fails with it
            out = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--version", required=True)
    s.add_argument("--code", default="OK")
    s.add_argument("--how", default="trailers-only", choices=HOWS)
    b = sub.add_parser("serve-broken")
    b.add_argument("--version", required=True)
    sub.add_parser("client")
    args = parser.parse_args()
    {"serve": serve, "serve-broken": serve_broken, "client": client}[args.command](args)


if __name__ == "__main__":
    main()
