#!/usr/bin/env python3
"""Removes from a .wasm the proxy-wasm callbacks canary-router never uses, before
`wasm-opt` (which then drops the SDK code behind them).

The proxy-wasm Rust SDK exports every callback of the ABI. A host calls a callback
only if the module exports it, and otherwise does what the SDK's default would
(proxy-wasm-cpp-host, as in Envoy: `if (!wasm_->on_response_body_) return
FilterDataStatus::Continue;`). So an export the filter does not use costs a trip
into the VM whenever the host has that event (every response body chunk, for
`proxy_on_response_body`), and the SDK's dispatch code for it (the gRPC-call
callbacks alone are about 10 KB). Measured with `make bench` (instructions per
request under callgrind): proxy_on_response_body, proxy_on_done and proxy_on_log
are each about 1.9k instructions a request, the whole list about 18 KB of the module.

Kept: what the filter implements or the SDK needs (VM start, context creation and
deletion, configuration, ticks, memory allocation, request and response headers,
response trailers for gRPC outcomes). Dropped: the names below. A filter change
that implements one of them must take it off this list (tests/e2e_* would show a
callback that never runs).

Usage: wasm_drop_exports.py IN.wasm OUT.wasm
Only the standard library.
"""

import sys

DROPPED = {
    # The end of a context, before its deletion: the host takes a missing export
    # as "done" (true), the SDK's default too; what the root context does at its
    # end, it does when the SDK drops it at proxy_on_delete, which stays.
    "proxy_on_done",
    # Access-log time: the filter counts what it must at proxy_on_delete instead
    # (a gRPC call that ended without a status, in CanaryRequest's Drop).
    "proxy_on_log",
    # HTTP events the filter ignores (the SDK's default: Continue).
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_response_body",
    # Network-filter events: canary-router is an HTTP filter only.
    "proxy_on_new_connection",
    "proxy_on_downstream_data",
    "proxy_on_downstream_connection_close",
    "proxy_on_upstream_data",
    "proxy_on_upstream_connection_close",
    # Answers to calls the filter never makes.
    "proxy_on_http_call_response",
    "proxy_on_grpc_receive_initial_metadata",
    "proxy_on_grpc_receive",
    "proxy_on_grpc_receive_trailing_metadata",
    "proxy_on_grpc_close",
    "proxy_on_queue_ready",
    "proxy_on_foreign_function",
}

EXPORT_SECTION = 7


def read_leb(data, at):
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def leb(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def drop_exports(module):
    if module[:4] != b"\0asm":
        raise ValueError("not a wasm module")
    out = bytearray(module[:8])
    at = 8
    dropped = []
    while at < len(module):
        section_id = module[at]
        size, body_at = read_leb(module, at + 1)
        body = module[body_at:body_at + size]
        at = body_at + size
        if section_id == EXPORT_SECTION:
            count, p = read_leb(body, 0)
            kept = []
            for _ in range(count):
                start = p
                name_len, p = read_leb(body, p)
                name = body[p:p + name_len].decode()
                p += name_len
                p += 1  # kind
                _, p = read_leb(body, p)  # index
                if name in DROPPED:
                    dropped.append(name)
                else:
                    kept.append(body[start:p])
            body = leb(len(kept)) + b"".join(kept)
        out.append(section_id)
        out += leb(len(body)) + body
    return bytes(out), dropped


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1], "rb") as f:
        module = f.read()
    result, dropped = drop_exports(module)
    missing = DROPPED - set(dropped)
    if missing and dropped:
        # Some but not all: the SDK renamed or stopped exporting a callback. Say so
        # rather than silently keep (or no longer need) the list. None at all: a
        # module already trimmed, passed through.
        sys.exit(f"wasm_drop_exports: not exported by the module: {', '.join(sorted(missing))}")
    with open(sys.argv[2], "wb") as f:
        f.write(result)


if __name__ == "__main__":
    main()
