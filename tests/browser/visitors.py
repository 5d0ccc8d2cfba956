"""Real browsers against canary-router: fresh Chromium profiles load a page whose
HTML and script each version serves its own way, before and after a ramp step.

Run by tests/e2e_browser.rs, which starts Envoy with the filter in front of the two
sites this script serves, and pushes the ramp step between the two phases:

    visitors.py --url URL --stable-port P --canary-port P [--visitors N] [--loads N]

Each version's site answers `/` with an HTML page that loads `/app.<version>.js`,
a script only that version has (the other answers 404), so a page whose HTML and
script come from different versions shows it. Nothing is cached (no-store), so
every load asks the proxy again, as a deploy with hashed bundles does.

Protocol, one JSON object per line on standard output:
  {"phase": 1, "visitors": [...]}   after N fresh profiles loaded the page LOADS times
  (waits for a line on standard input: the proxy's config has changed)
  {"phase": 2, "visitors": [...]}   after each profile loaded it once more
Each visitor is {"loads": [[html_version, script_version_or_null], ...],
"cookies": [{name, value, httpOnly, secure, sameSite, path}, ...]}.

Chromium is Debian's (/usr/bin/chromium, or $CHROMIUM), driven by Playwright for
Python with executable_path: no browser is downloaded.
"""

import argparse
import asyncio
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from playwright.async_api import async_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # 200 profiles need not be 200 renderer processes: a few, reused, are cheaper
    # (the profiles stay apart: each context has its own cookies and cache).
    "--renderer-process-limit=4",
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title></head>
<body data-version="{version}"><h1>shop, {version}</h1>
<script src="/app.{version}.js"></script></body></html>
"""


def site(version):
    """One version of the application: its page, its script, and 404 for the rest."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/":
                body, kind, status = PAGE.format(version=version), "text/html", 200
            elif path == f"/app.{version}.js":
                body, kind, status = f'window.appVersion = "{version}";\n', "text/javascript", 200
            else:
                body, kind, status = "not found\n", "text/plain", 404
            data = body.encode()
            self.send_response(status)
            self.send_header("content-type", kind + "; charset=utf-8")
            self.send_header("content-length", str(len(data)))
            self.send_header("cache-control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


def serve(port, version):
    server = ThreadingHTTPServer(("127.0.0.1", port), site(version))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def visit(context, url, loads, limit):
    """`loads` page loads in one tab: for each, the version of the HTML and of the
    script that ran (None: it did not load). The script is parser-blocking, so it
    has run or failed by DOMContentLoaded."""
    async with limit:
        page = await context.new_page()
        try:
            versions = []
            for _ in range(loads):
                await page.goto(url, wait_until="domcontentloaded", timeout=60000)
                versions.append(
                    await page.evaluate("[document.body.dataset.version, window.appVersion || null]")
                )
            return versions
        finally:
            await page.close()


async def cookies(context):
    return [
        {k: c.get(k) for k in ("name", "value", "httpOnly", "secure", "sameSite", "path")}
        for c in await context.cookies()
    ]


async def run(args):
    serve(args.stable_port, "stable")
    serve(args.canary_port, "canary")
    executable = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            limit = asyncio.Semaphore(args.concurrency)
            # A fresh profile each: no cookie, no cache.
            contexts = [await browser.new_context() for _ in range(args.visitors)]
            for phase, loads in ((1, args.loads), (2, 1)):
                if phase == 2:
                    # The proxy's config changes in between.
                    if not sys.stdin.readline():
                        raise SystemExit("standard input closed before phase 2")
                results = await asyncio.gather(
                    *(visit(c, args.url, loads, limit) for c in contexts)
                )
                visitors = [
                    {"loads": r, "cookies": await cookies(c)} for r, c in zip(results, contexts)
                ]
                print(json.dumps({"phase": phase, "visitors": visitors}), flush=True)
        finally:
            await browser.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--stable-port", type=int, required=True)
    parser.add_argument("--canary-port", type=int, required=True)
    parser.add_argument("--visitors", type=int, default=200)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
