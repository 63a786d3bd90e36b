"""The ``overseer ui`` server: the page and its JSON routes, on 127.0.0.1 only.

The server holds the target's access (a local stack's files, or the user's AWS
credentials for a deployed stack), so every request is checked, reads included:

* **a token**: one per process (``secrets.token_urlsafe``), in the printed address. The
  first load with ``?token=`` sets an HttpOnly, SameSite=Strict cookie and redirects to
  the address without it; later requests carry the cookie, or an ``Authorization: Bearer``
  header (scripts). Anything else gets 403;
* **the Host header** must be ``127.0.0.1:PORT`` or ``localhost:PORT``: a page on another
  site whose name resolves to 127.0.0.1 (DNS rebinding) is refused;
* **POSTs** (rerun, cancel) also need a JSON body type and, from a browser, an ``Origin``
  that is this server's own;
* every response forbids inline script and style and framing (Content-Security-Policy),
  sniffing and referrers. The page inserts every string as text (``static/app.js``).

Routes (JSON unless said)::

    GET  /                                       the page (static/index.html)
    GET  /static/<file>                          app.js, app.css, vendor/
    GET  /api/graphs?status=&after=&limit=       {"graphs": [...], "next"}
    GET  /api/graphs/<id>                        the graph
    GET  /api/graphs/<id>/state?since=CURSOR     the graph page's rows (``reads.graph_state``)
    GET  /api/graphs/<id>/jobs?after=&limit=&status=   {"jobs": {name: job}, "next"}
    GET  /api/graphs/<id>/jobs/<name>            the job, with its artifacts
    GET  /api/graphs/<id>/jobs/<name>/logs?attempt=    {"sources": [{"source", "attempt", "lines", "total"}]}
    GET  /api/graphs/<id>/jobs/<name>/logs.txt?attempt=    every line, as a text download
    GET  /api/graphs/<id>/jobs/<name>/artifacts/<key>  the artifact's bytes (a download)
    POST /api/graphs/<id>/rerun   {"job"?, "downstream"?}
    POST /api/graphs/<id>/cancel
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import mimetypes
import secrets
import sys
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, unquote, urlsplit
from urllib.request import url2pathname

from ..errors import ApiError, GraphNotFound, InvalidGraph, OverseerError, RerunRefused
from . import reads

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PORT = 8600
MAX_PAGE = 1000
MAX_BODY_BYTES = 64 * 1024
LOG_LINES_SHOWN = 5000
LOG_LINES_PER_CHUNK = 1000
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
STATIC_FILES = {"app.js", "app.css", "vendor/dagre.min.js"}


class Refused(Exception):
    """A request answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def static_file(name: str) -> bytes:
    return resources.files("overseer.ui").joinpath("static", *name.split("/")).read_bytes()


class UiServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` on 127.0.0.1 serving one target (``client``)."""

    daemon_threads = True

    def __init__(self, client: reads.Client, *, port: int = DEFAULT_PORT, host_check: bool = True) -> None:
        super().__init__((HOST, port), UiRequestHandler)
        self.client = client
        self.token = secrets.token_urlsafe(32)
        self.host_check = host_check
        self.port = int(self.server_address[1])
        self.allowed_hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        # Cookies are not per port: the name is, so two servers do not log each other out.
        self.cookie_name = f"overseer_ui_{self.port}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/?token={self.token}"

    def token_matches(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())


class UiRequestHandler(BaseHTTPRequestHandler):
    server: UiServer
    protocol_version = "HTTP/1.1"
    server_version = "overseer-ui"
    sys_version = ""

    # -- the checks -------------------------------------------------------------------------
    def _check_host(self) -> None:
        if self.server.host_check and self.headers.get("Host", "") not in self.server.allowed_hosts:
            raise Refused(403, "wrong Host header: open the address `overseer ui` printed")

    def _cookie_token(self) -> str | None:
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie", ""))
        except Exception:  # a malformed Cookie header is no token
            return None
        morsel = cookie.get(self.server.cookie_name)
        return morsel.value if morsel is not None else None

    def _bearer_token(self) -> str | None:
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    def _check_token(self) -> None:
        bearer = self._bearer_token()
        if not (self.server.token_matches(self._cookie_token()) or self.server.token_matches(bearer)):
            raise Refused(403, "no valid token: open the address `overseer ui` printed (with its ?token=)")

    def _check_same_origin(self) -> None:
        origin = self.headers.get("Origin")
        if origin is None:
            # Browsers send Origin on every POST; only a script with the token may omit it.
            if not self.server.token_matches(self._bearer_token()):
                raise Refused(403, "a POST needs an Origin header or an Authorization: Bearer token")
        elif origin != f"http://{self.headers.get('Host', '')}":
            raise Refused(403, f"cross-origin request from {origin!r} refused")
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            raise Refused(415, "send the body as application/json")

    # -- responses --------------------------------------------------------------------------
    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_lines(self, lines: Iterator[str], filename: str) -> None:
        """A text download sent as it is read (chunked): a job's whole log may be larger than
        the server should hold. An error before the first line is an error response; one
        after it cuts the transfer short (the browser reports the download failed)."""
        first = list(itertools.islice(lines, 1))
        safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in filename)
        self.send_response(200)
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Disposition", f'attachment; filename="{safe_name}"')
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command == "HEAD":
            return
        buffered: list[str] = []
        try:
            for line in itertools.chain(first, lines):
                buffered.append(line + "\n")
                if len(buffered) >= LOG_LINES_PER_CHUNK:
                    self._write_chunk("".join(buffered).encode())
                    buffered.clear()
        except Exception:
            logger.exception("log download %s cut short", self.path)
            self.close_connection = True  # no closing chunk: the client sees it incomplete
            return
        if buffered:
            self._write_chunk("".join(buffered).encode())
        self.wfile.write(b"0\r\n\r\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _json(self, status: int, value: Any) -> None:
        body = json.dumps(value, ensure_ascii=False, default=str).encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _refuse(self, refused: Refused) -> None:
        if self.path.startswith("/api/"):
            self._json(refused.status, {"error": refused.message})
        else:
            self._send(refused.status, f"{refused.message}\n".encode(), "text/plain; charset=utf-8")

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)

    # -- dispatch ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle(self._get)

    def do_HEAD(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _handle(self, route: Callable[[list[str], dict[str, str]], None]) -> None:
        try:
            self._check_host()
            url = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(url.query).items()}
            if self.command in ("GET", "HEAD") and "token" in query:
                self._log_in(url.path, query["token"])
                return
            self._check_token()
            segments = [unquote(part) for part in url.path.split("/")[1:]]
            route(segments, query)
        except Refused as refused:
            self._refuse(refused)
        except ApiError as exc:  # the deployed API's answer, passed on (0: it could not be reached)
            self._refuse(Refused(exc.status if 400 <= exc.status < 600 else 502, exc.message))
        except GraphNotFound as exc:
            self._refuse(Refused(404, str(exc)))
        except RerunRefused as exc:
            self._refuse(Refused(409, str(exc)))
        except (InvalidGraph, OverseerError, ValueError) as exc:
            self._refuse(Refused(400, str(exc)))
        except Exception as exc:
            logger.exception("ui request %s %s failed", self.command, self.path)
            self._refuse(Refused(500, f"{type(exc).__name__}: {exc}"))

    def _log_in(self, path: str, offered: str) -> None:
        """``?token=``: set the cookie and send the browser to the same page without it,
        so the token does not stay in the address bar or the history."""
        if not self.server.token_matches(offered):
            raise Refused(403, "wrong token: open the address `overseer ui` printed")
        cookie = f"{self.server.cookie_name}={self.server.token}; HttpOnly; SameSite=Strict; Path=/"
        self._send(303, b"", "text/plain", {"Location": path or "/", "Set-Cookie": cookie})

    def _get(self, segments: list[str], query: dict[str, str]) -> None:
        if segments in ([""], ["index.html"]):
            self._send(200, static_file("index.html"), "text/html; charset=utf-8")
        elif segments[0] == "static" and "/".join(segments[1:]) in STATIC_FILES:
            name = "/".join(segments[1:])
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            self._send(200, static_file(name), f"{kind}; charset=utf-8")
        elif segments[0] == "api":
            self._get_api(segments[1:], query)
        else:
            raise Refused(404, f"no page {self.path.split('?')[0]}")

    def _get_api(self, path: list[str], query: dict[str, str]) -> None:
        client = self.server.client
        match path:
            case ["graphs"]:
                limit = _page_size(query.get("limit"), 50)
                found, following = client.graphs(
                    query.get("status") or None, None, None, limit, query.get("after") or None
                )
                self._json(200, {"graphs": found, "next": following})
            case ["graphs", graph_id]:
                self._json(200, client.graph(graph_id))
            case ["graphs", graph_id, "state"]:
                self._json(200, reads.graph_state(client, graph_id, since=query.get("since") or None))
            case ["graphs", graph_id, "jobs"]:
                limit = _page_size(query.get("limit"), 100)
                page = reads.jobs_page(
                    client, graph_id, query.get("status") or None, query.get("after") or None, limit
                )
                self._json(200, page)
            case ["graphs", graph_id, "jobs", name]:
                detail = reads.job_detail(client, graph_id, name)
                # The download goes through this server, which asks for the artifact's URL then.
                detail["artifacts"] = [
                    {**item, "href": reads.download_href(graph_id, name, str(item["key"]))}
                    for item in detail.get("artifacts") or []
                ]
                self._json(200, detail)
            case ["graphs", graph_id, "jobs", name, "logs"]:
                attempt = int(query["attempt"]) if query.get("attempt", "").isdigit() else None
                by_attempt: dict[int, list[str]] = {}
                for number, line in client.logs(graph_id, name, attempt):
                    by_attempt.setdefault(number, []).append(line)
                sources = [
                    {
                        "source": f"attempt {number}",
                        "attempt": number,
                        "lines": lines[-LOG_LINES_SHOWN:],
                        "total": len(lines),
                    }
                    for number, lines in by_attempt.items()
                ]
                self._json(200, {"sources": sources})
            case ["graphs", graph_id, "jobs", name, "logs.txt"]:
                attempt = int(query["attempt"]) if query.get("attempt", "").isdigit() else None
                lines = (line for _, line in client.logs(graph_id, name, attempt))
                suffix = f"-attempt-{attempt}" if attempt is not None else ""
                self._send_lines(lines, f"{graph_id}-{name}{suffix}.log")
            case ["graphs", graph_id, "jobs", name, "artifacts", *key] if key:
                self._download(graph_id, name, "/".join(key))
            case _:
                raise Refused(404, f"no route GET {self.path.split('?')[0]}")

    def _download(self, graph_id: str, name: str, key: str) -> None:
        """One of the job's artifacts (only those its manifest lists), as a download."""
        listed = [item for item in reads.artifacts(self.server.client, graph_id, name) if item["key"] == key]
        if not listed or not listed[0].get("url"):
            raise Refused(404, f"job {name!r} of graph {graph_id!r} has no downloadable artifact {key!r}")
        url = str(listed[0]["url"])
        if url.startswith(("https://", "http://")):  # presigned (S3): the browser fetches it there
            self._send(302, b"", "text/plain", {"Location": url})
            return
        if not url.startswith("file://"):
            raise Refused(404, f"artifact {key!r} has no URL the page can follow")
        data = Path(url2pathname(urlsplit(url).path)).read_bytes()
        filename = key.rsplit("/", 1)[-1].replace('"', "_")
        self._send(
            200,
            data,
            "application/octet-stream",
            {"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    def _post(self, segments: list[str], _query: dict[str, str]) -> None:
        self._check_same_origin()
        body = self._read_body()
        client = self.server.client
        match segments:
            case ["api", "graphs", graph_id, "rerun"]:
                job, downstream = body.get("job"), body.get("downstream", False)
                if not isinstance(job, str | None) or not isinstance(downstream, bool):
                    raise Refused(400, "'job' must be a job name and 'downstream' true or false")
                self._json(200, client.rerun(graph_id, job, downstream))
            case ["api", "graphs", graph_id, "cancel"]:
                self._json(200, client.cancel(graph_id))
            case _:
                raise Refused(404, f"no route POST {self.path.split('?')[0]}")

    def _read_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise Refused(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise Refused(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "the body must be a JSON object")
        return body


def _page_size(raw: str | None, default: int) -> int:
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise Refused(400, f"'limit' must be a whole number from 1 to {MAX_PAGE}, got {raw!r}")
    return int(raw)


def serve(
    client: reads.Client, *, port: int = DEFAULT_PORT, host_check: bool = True, out: TextIO = sys.stdout
) -> None:
    """Serve ``client`` until interrupted, after printing the address to open (token included)."""
    server = UiServer(client, port=port, host_check=host_check)
    print(f"Overseer UI for {client.where}; open (the token is the key, keep it to yourself):", file=out)
    print(f"    {server.url}", file=out, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
