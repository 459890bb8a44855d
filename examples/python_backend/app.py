#!/usr/bin/env python3
"""A Switchboard backend in Python, with the standard library only (docs/backends.md).

Switchboard (`switchboard serve --config switchboard.toml`) holds the WebSockets; this process
holds the application's logic and is asked over HTTP (PROTOCOL.md, "Proxies"):

* POST /connect  the connect proxy: who is this connection? The `session` cookie set by /login
                 (browsers), else the `name` of the client's connect `data` ({"name": "alice"},
                 a stand-in for real credentials: anyone may claim any name here). Neither: the
                 connection is closed with 4502 (4500-4999: clients do not reconnect; 4501
                 is the server API's disconnect, so the backend uses a code of its own).
* POST /rpc      the action proxy: actions the server does not declare itself.
                 `send` {text} publishes {"user", "text"} on `chat:lobby` through the server's
                 HTTP API (/api/publish, with the API key); `online` reads the channel's presence
                 counts (/api/presence_stats). Any other action is answered with an error.
* POST /login    {"name": "alice"} (JSON or a form): sets the `session` cookie. POST /logout.
* GET  /         a small chat page using the browser client (its bundle, /switchboard.js, is
                 passed through from the Switchboard server).

    python3 examples/python_backend/app.py --port 8001 \\
        --switchboard http://127.0.0.1:8000 --api-key change-me-api-key

`--port 0` picks a free port; the first line printed says which.
"""

import argparse
import http.cookies
import http.server
import json
import re
import secrets
import sys
import threading
import urllib.error
import urllib.request
from urllib.parse import parse_qs

CHANNEL = "chat:lobby"
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
MAX_TEXT = 1000
MAX_BODY = 64 * 1024


class ApiError(Exception):
    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Switchboard:
    """The server's HTTP API: POST /api/<method>, JSON in and out, `Authorization: apikey KEY`."""

    def __init__(self, url, api_key, timeout=5.0):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def call(self, method, body):
        request = urllib.request.Request(
            f"{self.url}/api/{method}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"apikey {self.api_key}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)["result"]
        except urllib.error.HTTPError as e:
            # 4xx: {"error": {"code": N, "message": "…"}}
            try:
                error = json.load(e)["error"]
                raise ApiError(error["code"], error["message"]) from None
            except (ValueError, KeyError, TypeError):
                raise ApiError(e.code, f"HTTP {e.code}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ApiError(0, f"Switchboard unreachable at {self.url}: {e}") from None
        except (ValueError, KeyError, TypeError) as e:
            raise ApiError(0, f"unexpected answer from {self.url}/api/{method}: {e!r}") from None

    def publish(self, channel, data):
        return self.call("publish", {"channel": channel, "data": data})

    def get(self, path):
        with urllib.request.urlopen(f"{self.url}{path}", timeout=self.timeout) as response:
            return response.read()


# Logged-in browsers: session cookie → user name. A real application uses its own session store.
SESSIONS = {}
SESSIONS_LOCK = threading.Lock()


def session_user(cookie_header):
    if not cookie_header:
        return None
    cookies = http.cookies.SimpleCookie()
    try:
        cookies.load(cookie_header)
    except http.cookies.CookieError:
        return None
    session = cookies.get("session")
    if session is None:
        return None
    with SESSIONS_LOCK:
        return SESSIONS.get(session.value)


def connect(request):
    """The connect proxy: {"client", "transport", "headers", "data"?, "token"?} → who it is."""
    headers = request.get("headers") or {}
    user = session_user(headers.get("cookie"))
    if user is None:
        data = request.get("data")
        name = data.get("name") if isinstance(data, dict) else None
        if name is not None:
            if not isinstance(name, str) or not NAME.match(name):
                # An error reply: the connection stays and may send another connect.
                return {"error": {"code": 1001, "message": "Invalid name: 1 to 32 letters, digits, '.', '_' or '-'."}}
            user = name
    if user is None:
        # Closes the connection with this code; 4500-4999: the client does not reconnect.
        return {"disconnect": {"code": 4502, "reason": "unauthorized: log in first"}}
    return {"result": {"user": user, "info": {"name": user}}}


def rpc(request, switchboard):
    """The action proxy: {"client", "user", "action", "data"} → {"result": {"data": …}} or an error."""
    action = request.get("action")
    user = request.get("user") or ""
    data = request.get("data")
    if not isinstance(data, dict):
        data = {}
    if action == "send":
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            return {"error": {"code": 400, "message": "send: give a non-empty text."}}
        if len(text) > MAX_TEXT:
            return {"error": {"code": 400, "message": f"send: at most {MAX_TEXT} characters."}}
        try:
            published = switchboard.publish(CHANNEL, {"user": user, "text": text})
        except ApiError as e:
            print(f"publish on {CHANNEL} failed: {e}", file=sys.stderr, flush=True)
            return {"error": {"code": 503, "message": "Could not send the message: try again later."}}
        answer = {"ok": True}
        if "offset" in published:
            answer["offset"] = published["offset"]
        return {"result": {"data": answer}}
    if action == "online":
        try:
            return {"result": {"data": switchboard.call("presence_stats", {"channel": CHANNEL})}}
        except ApiError as e:
            print(f"presence_stats of {CHANNEL} failed: {e}", file=sys.stderr, flush=True)
            return {"error": {"code": 503, "message": "Presence unavailable: try again later."}}
    return {"error": {"code": 404, "message": f"Unknown action '{action}'."}}


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Chat (Python backend)</title><link rel="icon" href="data:,">
<style>body{font:15px/1.4 system-ui,sans-serif;max-width:40rem;margin:1rem auto;padding:0 1rem}
ul{list-style:none;padding:0;min-height:10rem;border:1px solid #ccc;border-radius:6px}li{padding:.2rem .5rem}
form{display:flex;gap:.5rem}input{flex:1}[hidden]{display:none!important}</style></head><body>
<h1>Chat <small id="state"></small></h1>
<form id="login"><label for="name">Your name</label><input id="name" required autocomplete="username"><button>Log in</button></form>
<div id="chat" hidden><ul id="messages" aria-live="polite"></ul>
<form id="send"><label for="text" hidden>Message</label><input id="text" required autocomplete="off" placeholder="Message"><button>Send</button></form></div>
<p id="error" role="alert"></p>
<script type="module">
import { connect } from '/switchboard.js';
const $ = (id) => document.getElementById(id);
const seen = new Set();
function show({ offset, data }) {
  if (!data || typeof data.text !== 'string') return; // published by someone else with the API key
  if (offset != null && seen.has(offset)) return;
  seen.add(offset);
  const li = document.createElement('li');
  li.textContent = `${data.user ?? "?"}: ${data.text}`;
  $('messages').append(li);
}
function start() {
  $('login').hidden = true; $('chat').hidden = false;
  // connect: true: authenticate through the connect proxy (the session cookie) before anything else.
  const client = connect(WS_URL, { connect: true });
  client.onState((s) => {
    $('state').textContent = s === 'open' ? `(${client.user})` : `(${s})`;
    if (s === 'closed' && client.closeCode >= 4500) { $('error').textContent = client.closeReason; $('login').hidden = false; $('chat').hidden = true; }
  });
  const recent = async () => (await client.history('chat:lobby', {}, { limit: 50 })).publications.forEach(show);
  client.subscribe('chat:lobby', {}, (data, { offset }) => show({ offset, data }), {
    onSubscribed: ({ resubscribed }) => resubscribed || recent(),
    onRecovery: (recovered) => recovered || recent(),
  });
  $('send').onsubmit = async (e) => {
    e.preventDefault();
    try { await client.action('send', { text: $('text').value }); $('text').value = ''; $('error').textContent = ''; }
    catch (err) { $('error').textContent = err.message; }
  };
}
$('login').onsubmit = async (e) => {
  e.preventDefault();
  const res = await fetch('/login', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: $('name').value }) });
  if (res.ok) start(); else $('error').textContent = (await res.json()).error;
};
if (LOGGED_IN) start();
</script></body></html>
"""


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "python-backend/1"
    switchboard = None  # set in main
    ws_url = None
    bundle = None

    def log_message(self, format, *args):
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def send_json(self, body, status=200, headers=()):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        raw = self.rfile.read(length)
        if (self.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            return {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        body = json.loads(raw or b"{}")
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        return body

    def do_POST(self):
        try:
            body = self.read_body()
        except (ValueError, UnicodeDecodeError) as e:
            return self.send_json({"error": f"Invalid request body: {e}"}, 400)
        if self.path == "/connect":
            return self.send_json(connect(body))
        if self.path == "/rpc":
            return self.send_json(rpc(body, self.switchboard))
        if self.path == "/login":
            name = body.get("name")
            if not isinstance(name, str) or not NAME.match(name):
                return self.send_json({"error": "Give a name: 1 to 32 letters, digits, '.', '_' or '-'."}, 400)
            session = secrets.token_urlsafe(24)
            with SESSIONS_LOCK:
                SESSIONS[session] = name
            cookie = f"session={session}; Path=/; HttpOnly; SameSite=Lax"
            return self.send_json({"user": name}, headers=[("Set-Cookie", cookie)])
        if self.path == "/logout":
            cookie = "session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
            return self.send_json({}, headers=[("Set-Cookie", cookie)])
        self.send_json({"error": "Not found"}, 404)

    def do_GET(self):
        if self.path == "/":
            logged_in = session_user(self.headers.get("Cookie")) is not None
            page = PAGE.replace("WS_URL", json.dumps(self.ws_url)).replace("LOGGED_IN", json.dumps(logged_in))
            payload = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
        elif self.path == "/switchboard.js":
            # The browser client, as the Switchboard server serves it (same origin for the page).
            try:
                if Handler.bundle is None:
                    Handler.bundle = self.switchboard.get("/switchboard.js")
            except (urllib.error.URLError, OSError) as e:
                return self.send_json({"error": f"Switchboard unreachable: {e}"}, 502)
            payload = Handler.bundle
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
        else:
            return self.send_json({"error": "Not found"}, 404)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main():
    parser = argparse.ArgumentParser(description="A Switchboard backend: connect and action proxies, publishing through the HTTP API.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on (0: a free one; default 8001)")
    parser.add_argument("--switchboard", default="http://127.0.0.1:8000", help="the Switchboard server's URL (default http://127.0.0.1:8000)")
    parser.add_argument("--api-key", required=True, help="the server's api_key (switchboard.toml)")
    parser.add_argument("--ws-url", help="the WebSocket URL browsers use (default: --switchboard's, at /ws)")
    args = parser.parse_args()

    Handler.switchboard = Switchboard(args.switchboard, args.api_key)
    Handler.ws_url = args.ws_url or re.sub(r"^http", "ws", args.switchboard.rstrip("/")) + "/ws"
    server = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"python backend listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
