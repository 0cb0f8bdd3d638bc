"""The ingest tier's edge (``app.ingest.http``) on a fake transport: pipelined answers in order
whatever order their work ends in, reading paused meanwhile; errors as JSON; 413 before a body is
read; a malformed request; routing's 404 and 405; the handlers' order of checks
(``app.ingest.handlers``) with fakes for the publisher and the rows."""

import asyncio
import re
from types import SimpleNamespace

import orjson
import pytest

from app.ingest.errors import HttpError, Unavailable
from app.ingest.handlers import ACCEPTED_ONE, Api, Later, Request, Response
from app.ingest.http import Connection, Router, Server
from app.ingest.keys import parse_all
from app.ingest.limits import RateLimiter

APP = "0f8fad5b-d9cb-469f-a165-70867728950e"
OTHER = "ff8fad5b-d9cb-469f-a165-70867728950e"
SUB = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
ROW = f"/v1/apps/{APP}/subscriptions/{SUB}"


class Transport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = self.paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def statuses(self) -> list[int]:
        return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", self.out)]


def connect(route) -> tuple[Connection, Transport]:
    connection = Server(body_timeout=5, route=route).connection()
    transport = Transport()
    connection.connection_made(transport)
    return connection, transport


def get(path: str) -> bytes:
    return b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode()


async def test_pipelined_answers_come_in_order_and_reading_pauses_meanwhile():
    loop = asyncio.get_running_loop()
    pending = {"/a": loop.create_future(), "/b": loop.create_future()}

    def route(request):
        if request.path == "/c":
            return Response(200, b'"c"')
        return Later(pending[request.path])

    connection, transport = connect(route)
    connection.data_received(get("/a") + get("/b") + get("/c"))
    assert transport.paused and transport.out == b""
    pending["/b"].set_result(Response(201, b'"b"'))
    await asyncio.sleep(0)
    assert transport.out == b""  # /b is done, but /a is owed first
    pending["/a"].set_exception(Unavailable("the broker is away"))
    for _ in range(3):  # each answer's callback runs on a later turn of the loop
        await asyncio.sleep(0)
    assert transport.statuses() == [503, 201, 200] and not transport.paused
    assert b"Retry-After: 1\r\n" in transport.out
    assert b'{"error":"the broker is away"}' in transport.out
    assert not transport.closed


async def test_an_unexpected_error_is_a_500_and_the_connection_goes_on():
    def route(request):
        raise RuntimeError("a bug")

    connection, transport = connect(route)
    connection.data_received(get("/x"))
    assert transport.statuses() == [500] and b'{"error":"internal error"}' in transport.out
    assert not transport.closed


async def test_a_body_over_the_limit_is_413_before_it_is_read_and_the_connection_closes():
    connection, transport = connect(lambda request: pytest.fail("routed"))
    connection.data_received(
        b"POST /v1/updates HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n[{"
    )
    assert transport.statuses() == [413] and transport.closed
    connection.data_received(b"more body")  # ignored


async def test_a_malformed_request_is_400_and_closes():
    connection, transport = connect(lambda request: pytest.fail("routed"))
    connection.data_received(b"GET / HTTP/1.1\r\nHost x\r\n\r\n")
    assert transport.statuses() == [400] and transport.closed
    assert b"malformed HTTP request" in transport.out


def fake_api(**overrides):
    calls = []

    def handler(name):
        def handle(request, *args):
            calls.append((name, args))
            return ACCEPTED_ONE

        return handle

    names = ("post", "patch", "get", "healthz", "readyz", "metrics", "openapi")
    return SimpleNamespace(**{name: handler(name) for name in names}, **overrides), calls


def test_routes_404_and_405():
    api, calls = fake_api()
    route = Router(api)
    route(Request("PATCH", ROW, "", b""))
    route(Request("GET", "/healthz", "", b""))
    assert calls == [("patch", (APP, SUB)), ("healthz", ())]
    with pytest.raises(HttpError) as error:
        route(Request("DELETE", ROW, "", b""))
    assert error.value.status == 405 and dict(error.value.headers) == {"Allow": "PATCH, GET"}
    for path in ("/v1/apps/x", f"/v1/apps/{APP}/rows/{SUB}", "/"):
        with pytest.raises(HttpError) as error:
            route(Request("GET", path, "", b""))
        assert error.value.status == 404


class Publishing:
    def __init__(self) -> None:
        self.records: list = []

    def publish(self, records):
        self.records.extend(records)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def ping(self) -> bool:
        return True


class Rows:
    def __init__(self, row=None, error=None) -> None:
        self.row, self.error = row, error

    async def fetch(self, app_id, subscription_id):
        if self.error:
            raise self.error
        return self.row


def api_with(limiter=None, rows=None):
    publisher = Publishing()
    api = Api(
        keys=parse_all(["admin-key", f"scoped-key:{APP}"]),
        limiter=limiter,
        publisher=publisher,
        partition_of_app=lambda app_id: 4,
        rows=rows or Rows(),
        exposition=lambda: b"",
        openapi={},
        clock=lambda: 1.5,
    )
    return api, publisher


def status_of(call) -> int:
    try:
        call()
    except HttpError as error:
        return error.status
    return 0


async def test_the_order_of_checks_401_400_403_400_429():
    api, publisher = api_with(RateLimiter(rate=1, burst=1000, clock=lambda: 0.0))
    bad_body = b'{"properties": 1}'
    good = b'{"properties": {"a": 1}}'
    admin, scoped = "Bearer admin-key", "Bearer scoped-key"
    other_row = f"/v1/apps/{OTHER}/subscriptions/{SUB}"
    assert status_of(lambda: api.patch(Request("PATCH", ROW, "", bad_body), "x", SUB)) == 401
    assert status_of(lambda: api.patch(Request("PATCH", ROW, admin, bad_body), "x", SUB)) == 400
    assert (
        status_of(lambda: api.patch(Request("PATCH", other_row, scoped, bad_body), OTHER, SUB))
        == 403
    )
    assert status_of(lambda: api.patch(Request("PATCH", ROW, scoped, bad_body), APP, SUB)) == 400
    answer = api.patch(Request("PATCH", ROW, scoped, good), APP, SUB)
    assert answer.response is ACCEPTED_ONE and await answer.done is None
    [record] = publisher.records
    assert record.partition == 4 and orjson.loads(record.value)["received_at"] == 1.5
    body = orjson.dumps([{"app_id": APP, "subscription_id": SUB, "properties": {}}] * 999)
    assert status_of(lambda: api.post(Request("POST", "/v1/updates", admin, body))) == 0
    assert status_of(lambda: api.post(Request("POST", "/v1/updates", admin, body))) == 429


async def test_the_row_read_404_200_and_503():
    api, _ = api_with()
    request = Request("GET", ROW, "Bearer admin-key", b"")
    with pytest.raises(HttpError) as error:
        await api.get(request, APP, SUB).done
    assert error.value.status == 404
    api, _ = api_with(rows=Rows(row={"app_id": APP, "properties": {"a": 1}}))
    answer = await api.get(request, APP, SUB).done
    assert answer.status == 200 and orjson.loads(answer.body)["properties"] == {"a": 1}
    api, _ = api_with(rows=Rows(error=OSError("connection refused")))
    with pytest.raises(Unavailable):
        await api.get(request, APP, SUB).done


async def test_with_tracing_each_record_carries_the_requests_span():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from app.observe import tracing

    exporter = InMemorySpanExporter()
    tracing.configure(exporter=exporter)
    try:
        api, publisher = api_with()
        body = orjson.dumps([{"app_id": APP, "subscription_id": SUB, "properties": {}}] * 2)
        answer = api.post(Request("POST", "/v1/updates", "Bearer admin-key", body))
        assert (await answer.done).status == 202
    finally:
        tracing.disable()
    [span] = exporter.get_finished_spans()
    assert span.name == "rowstream.ingest" and span.attributes["rowstream.updates"] == 2
    [record] = publisher.records  # one app: one update batch
    [traceparent] = [value for name, value in record.headers if name == "traceparent"]
    assert f"{span.context.trace_id:032x}" in traceparent.decode()


async def test_every_request_taken_is_answered_once_refusals_and_closes_included():
    """The count of owed answers a graceful stop waits for: back to 0 after answers, a 413
    refusal, a connection closed with pipelined requests queued, and a stop."""
    loop = asyncio.get_running_loop()
    pending = loop.create_future()
    server = Server(body_timeout=5, route=lambda request: Later(pending))
    connection, transport = server.connection(), Transport()
    connection.connection_made(transport)
    connection.data_received(get("/a") + get("/b") + get("/c"))
    assert server.owed == 3
    connection.stop()  # graceful: /a is answered, then the connection closes
    pending.set_result(Response(200, b"{}"))
    for _ in range(3):
        await asyncio.sleep(0)
    assert transport.statuses() == [200] and transport.closed and server.owed == 0
    await asyncio.wait_for(server.all_answered(timeout=1), 2)

    refused, transport = server.connection(), Transport()
    refused.connection_made(transport)
    refused.data_received(b"POST /v1/updates HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n")
    assert transport.statuses() == [413] and server.owed == 0


def test_the_ingest_tier_loads_no_faust():
    """``python -m app.ingest`` holds only its own path: not Faust, mode or aiohttp (start time
    and memory; docs/benchmark.md, "The front door")."""
    import subprocess
    import sys

    probe = (
        "import sys, app.ingest.__main__, app.ingest.server\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'faust', 'mode', 'aiohttp'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
