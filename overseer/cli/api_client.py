"""A client of the deployed stack's API (API Gateway, IAM auth): SigV4-signed HTTPS.

Credentials and region come from the standard AWS configuration (``AWS_PROFILE``,
environment variables, SSO, instance roles...) through botocore; the region defaults to
the one in the API's URL (``https://<id>.execute-api.<region>.amazonaws.com/<stage>``).
Every method returns the API's JSON (see ``functions.api``); an error status raises
``ApiError`` with the API's ``{"error": ...}`` message.

Job logs and artifact downloads come through the API too (``GET .../logs``, ``GET
.../artifacts``): the API alone is enough to operate the stack.

Example
-------
>>> api = RemoteApi("https://abc123.execute-api.eu-west-1.amazonaws.com/v1")
>>> api.submit({"graph": {"id": "g1", "jobs": {"a": []}}})["created"]
True
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from ..errors import ApiError

_REGION_IN_URL = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com")
TIMEOUT_SECONDS = 30.0
# The most jobs one GET /graphs/{id}/jobs answers (functions.api.MAX_PAGE).
MAX_JOBS_PAGE = 1000


def region_from_url(url: str) -> str | None:
    match = _REGION_IN_URL.search(urlsplit(url).netloc)
    return match.group(1) if match else None


class RemoteApi:
    """Calls the Overseer API at ``base_url`` (the stack's ``ApiUrl`` output)."""

    def __init__(
        self,
        base_url: str,
        *,
        region: str | None = None,
        session: Any = None,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        import boto3

        self.base_url = base_url.rstrip("/")
        self.session = session or boto3.Session()
        self.region = (
            region
            or region_from_url(base_url)
            or os.environ.get("AWS_REGION")  # botocore itself reads only AWS_DEFAULT_REGION
            or self.session.region_name
            or "us-east-1"
        )
        self.timeout = timeout

    # -- transport ----------------------------------------------------------------------
    def _signed_headers(self, method: str, url: str, body: bytes | None) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        credentials = self.session.get_credentials()
        if credentials is None:
            raise ApiError(0, "no AWS credentials found: configure a profile or set AWS_PROFILE")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", self.region).add_auth(request)
        return dict(request.headers.items())

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        url = self.base_url + path
        params = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        if params:
            url += "?" + urlencode(sorted(params.items()))
        data = json.dumps(body).encode() if body is not None else None
        if data is None and method == "POST":
            data = b"{}"
        headers = self._signed_headers(method, url, data)
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return _decode(response.read())
        except urllib.error.HTTPError as exc:
            payload = _decode(exc.read())
            raise ApiError(
                exc.code, str(payload.get("error") or payload.get("message") or exc.reason)
            ) from None
        except urllib.error.URLError as exc:
            raise ApiError(0, f"cannot reach {self.base_url}: {exc.reason}") from None

    # -- the routes -----------------------------------------------------------------------
    def submit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /graphs`` with ``{"graph": {...}}`` or ``{"template": NAME, "args": {...}}``."""
        return self.request("POST", "/graphs", body=body)

    def get_graph(self, graph_id: str) -> dict[str, Any]:
        return self.request("GET", f"/graphs/{quote(graph_id, safe='')}")

    def iter_jobs(
        self,
        graph_id: str,
        status: str | None = None,
        *,
        changed_since: str | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> Iterator[tuple[str, Any]]:
        """The graph's jobs (name, summary) in name order, following the API's pages: those
        written at or after ``changed_since``, whose names sort after ``after``, at most
        ``limit`` of them (None: every one)."""
        left = limit
        while left is None or left > 0:
            page = min(left, MAX_JOBS_PAGE) if left is not None else MAX_JOBS_PAGE
            query = {
                "status": status or "",
                "after": after or "",
                "limit": str(page),
                "changed_since": changed_since or "",
            }
            body = self.request("GET", f"/graphs/{quote(graph_id, safe='')}/jobs", query=query)
            jobs = list(body.get("jobs", {}).items())
            yield from jobs
            left = left - len(jobs) if left is not None else None
            after = body.get("next")
            if not after:
                return

    def get_graphs(self, query: Mapping[str, str]) -> dict[str, Any]:
        """``GET /graphs``: the graphs newest first, and where the next page starts."""
        return self.request("GET", "/graphs", query=query)

    def get_limits(self) -> dict[str, dict[str, Any]]:
        """``GET /limits``: each concurrency limit's size, running, holders and waiting. A
        stack deployed before that route has no limits to show: API Gateway answers 403
        "Missing Authentication Token" for a resource it does not have, the function 404."""
        try:
            body = self.request("GET", "/limits")
        except ApiError as exc:
            if exc.status == 404 or (exc.status == 403 and "Missing Authentication Token" in exc.message):
                return {}
            raise
        limits: dict[str, dict[str, Any]] = body.get("limits") or {}
        return limits

    def get_job(self, graph_id: str, job: str) -> dict[str, Any]:
        return self.request("GET", _job_path(graph_id, job))

    def job_logs(
        self, graph_id: str, job: str, attempt: int | None = None, after: str | None = None
    ) -> dict[str, Any]:
        """``GET /graphs/{id}/jobs/{job}/logs``: ``{"lines": [{"attempt", "line"}], "next"}``."""
        query = {"attempt": str(attempt or ""), "after": after or ""}
        return self.request("GET", _job_path(graph_id, job) + "/logs", query=query)

    def job_artifacts(self, graph_id: str, job: str) -> dict[str, Any]:
        """``GET /graphs/{id}/jobs/{job}/artifacts``: each artifact with a download ``url``."""
        return self.request("GET", _job_path(graph_id, job) + "/artifacts")

    def cancel(self, graph_id: str) -> dict[str, Any]:
        return self.request("POST", f"/graphs/{quote(graph_id, safe='')}/cancel")

    def rerun(self, graph_id: str, job: str | None = None, downstream: bool = False) -> dict[str, Any]:
        """``POST /graphs/{id}/rerun``, with ``{"job", "downstream"}`` to rerun one job."""
        body = {"job": job, "downstream": downstream} if job is not None else None
        return self.request("POST", f"/graphs/{quote(graph_id, safe='')}/rerun", body=body)


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode() or "{}")
    except ValueError:
        return {"error": raw.decode(errors="replace")[:500]}
    return value if isinstance(value, dict) else {"value": value}


def _job_path(graph_id: str, job: str) -> str:
    return f"/graphs/{quote(graph_id, safe='')}/jobs/{quote(job, safe='')}"
