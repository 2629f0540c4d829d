"""A fake AI/ML API on loopback, with its image host on a second address.

It checks every generation request against the model's published request
schema (copied in ``tests/schemas``, read strictly: a field the schema does
not list is a 400 "Body validation error!"), answers in the documented shape
for the model with the documented headers (``x-inference-id``,
``x-aimlapi-credits-used``, ``x-aimlapi-usd-spent``), keeps the log of requests,
the model catalogue and the balance its service endpoints publish
(tests/fake_service.py, as the vendor's OpenAPI documents give them), and
serves PNGs of the documented sizes from 127.0.0.2. Tests plan answers and faults on either host and read back every
request it received."""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import json
import re
import struct
import threading
import time
import urllib.parse
import zlib
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema

from llm_imagen4 import images

from . import fake_service, openapi
from .fake_service import CREDITS_PER_USD, LogRow, Service

SCHEMAS = Path(__file__).parent / "schemas"
SERVICE_PATHS = ("/v2/logs", "/v1/models", "/v2/billing")
GENERATIONS_PATH = "/v1/images/generations"
SCHEMA_FILES = {
    "google/imagen4/preview": "google-imagen4-preview.2025-08.json",
    "google/imagen-4.0-generate-001": "imagen-4.0-generate-001.2026-01.json",
    "google/imagen-4.0-fast-generate-001": "imagen-4.0-fast-generate-001.2026-01.json",
    "google/imagen-4.0-ultra-generate-001": "imagen-4.0-ultra-generate-001.2026-01.json",
}
PREVIEW_2026 = "imagen-4-preview.2026-01.json"
# The preview's second published id (2026-08), in an OpenAPI document of its
# own: the plugin does not send it, but the API takes it.
SHORT_ID, SHORT_ID_FILE = "imagen4/preview", "imagen4-preview-short-id.2026-08.json"
# The documented sizes, written out here rather than taken from the plugin, so
# that a wrong size in the plugin fails a test.
SIZES = {
    "1:1": (1024, 1024),
    "16:9": (1408, 768),
    "9:16": (768, 1408),
    "4:3": (1280, 896),
    "3:4": (896, 1280),
}
KEY = "sk-test-4f1c0ffee"
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def load_schema(api_model: str, preview_2026: bool = False) -> dict[str, Any]:
    if api_model == SHORT_ID:
        post = json.loads((SCHEMAS / SHORT_ID_FILE).read_text())["paths"][
            GENERATIONS_PATH
        ]["post"]
        return {
            "request_schema": post["requestBody"]["content"]["application/json"][
                "schema"
            ],
            "response_schema": post["responses"]["200"]["content"]["application/json"][
                "schema"
            ],
        }
    name = SCHEMA_FILES[api_model]
    if preview_2026 and api_model == "google/imagen4/preview":
        name = PREVIEW_2026
    return json.loads((SCHEMAS / name).read_text())


def published_request_schemas(api_model: str) -> list[dict[str, Any]]:
    """Every published request schema of a model (the preview has two), as
    the fake checks a request against them: no field beyond theirs."""
    if api_model not in (*SCHEMA_FILES, SHORT_ID):
        return []
    versions = [False, True] if api_model == "google/imagen4/preview" else [False]
    return [
        strict(load_schema(api_model, newer)["request_schema"]) for newer in versions
    ]


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(schema)
    schema["additionalProperties"] = False
    return schema


def png(width: int, height: int, salt: bytes = b"", extra: bytes = b"") -> bytes:
    """A valid PNG of the given size: grey, with the salt in its first row so
    that different seeds give different files; ``extra`` chunks go before
    the image data."""
    row = bytes([0]) + (salt * (width // max(len(salt), 1) + 1))[:width].ljust(
        width, b"\x80"
    )
    rows = row + (bytes([0]) + b"\x80" * width) * (height - 1)
    return (
        images.PNG_SIGNATURE
        + images.png_chunk(
            b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
        )
        + extra
        + images.png_chunk(b"IDAT", zlib.compress(rows, 1))
        + images.png_chunk(b"IEND", b"")
    )


def jpeg(width: int, height: int) -> bytes:
    """The smallest JPEG a reader of sizes and metadata needs: SOI, JFIF,
    SOF0, a scan header and a few bytes of scan, EOI."""
    return (
        b"\xff\xd8\xff\xe0"
        + struct.pack(">H", 16)
        + b"JFIF\x00"
        + b"\x00" * 9
        + b"\xff\xc0"
        + struct.pack(">HBHH", 17, 8, height, width)
        + b"\x03"
        + b"\x00" * 9
        + b"\xff\xda"
        + struct.pack(">H", 8)
        + b"\x01\x01\x00\x00\x3f\x00"
        + b"\x00" * 4
        + b"\xff\xd9"
    )


# The JUMBF types of a C2PA manifest store, a manifest and a claim: four
# letters, then the suffix ISO gives such UUIDs.
C2PA_STORE_UUID = b"c2pa" + bytes.fromhex("00110010800000aa00389b71")
C2PA_MANIFEST_UUID = b"c2ma" + bytes.fromhex("00110010800000aa00389b71")
C2PA_CLAIM_UUID = b"c2cl" + bytes.fromhex("00110010800000aa00389b71")


def jumbf_box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def jumbf_superbox(uuid: bytes, label: str, *children: bytes) -> bytes:
    """A JUMBF superbox: its description box (the type, requestable, a
    label), then its children."""
    description = jumbf_box(b"jumd", uuid + b"\x03" + label.encode() + b"\0")
    return jumbf_box(b"jumb", description + b"".join(children))


def c2pa_store(padding: int = 0) -> bytes:
    """A C2PA manifest store as JUMBF, as a signer embeds it: the store's
    superbox around one manifest, around its claim (``padding`` bytes of
    it, for a store that spans JPEG segments)."""
    claim = jumbf_superbox(
        C2PA_CLAIM_UUID, "c2pa.claim", jumbf_box(b"cbor", b"\xa0" + bytes(padding))
    )
    manifest = jumbf_superbox(C2PA_MANIFEST_UUID, "urn:c2pa:fake-signer", claim)
    return jumbf_superbox(C2PA_STORE_UUID, "c2pa", manifest)


def jpeg_app11(box: bytes, instance: int = 1, size: int = 65000) -> bytes:
    """``box`` in JPEG APP11 segments, as JPEG XT carries JUMBF: each holds
    "JP", the box instance, its sequence number, and after the first, the
    box's header again."""
    header, rest = box[:8], box[8:]
    pieces = [box[: size + 8]] + [
        header + rest[i : i + size] for i in range(size, len(rest), size)
    ]
    return b"".join(
        b"\xff\xeb"
        + struct.pack(">H", 2 + 8 + len(piece))
        + b"JP"
        + struct.pack(">HI", instance, number)
        + piece
        for number, piece in enumerate(pieces, 1)
    )


def _quiet_when_the_client_left(request: Any, address: Any) -> None:
    """A client that hung up mid-answer is what many tests do on purpose."""
    import sys
    import traceback

    if not isinstance(sys.exc_info()[1], ConnectionError):
        traceback.print_exc()


@dataclass
class Received:
    host: str
    method: str
    path: str
    headers: dict[str, str]
    body: Any = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class State:
    requests: list[Received] = field(default_factory=list)
    # Answers to give instead of the normal one, first planned first.
    api_faults: deque = field(default_factory=deque)
    # Per image file name: faults for its downloads, first planned first.
    cdn_faults: dict[str, deque] = field(default_factory=dict)
    # Faults planned for the downloads of every image made from now on.
    download_faults: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    # The log, the catalogue and the balance of the service endpoints.
    service: Service = field(default_factory=Service)
    response_shape: str | None = None  # force "images", "data" or "both"
    credits_per_image: float = 120000
    # Where the answer reports its cost: "body", "tokens" or "headers".
    cost_in: str = "body"
    # The prompt the API says it made each image from, when it rewrites.
    enhanced_prompt: str | None = None
    # Chunks the image host adds to each PNG before its data (XMP, caBX).
    png_extra: bytes = b""
    preview_2026: bool = False  # the preview follows its 2026-01 schema
    gone_models: set[str] = field(default_factory=set)
    delay: float = 0.0  # seconds each generation takes
    download_delay: float = 0.0  # seconds the image host takes to answer
    in_flight: int = 0
    most_in_flight: int = 0
    # When set, generations wait here, so tests can count them in flight.
    barrier: threading.Barrier | None = None


class FakeAPI:
    def __init__(self) -> None:
        self.state = State()
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.api = ThreadingHTTPServer(("127.0.0.1", 0), self._handler("api"))
        self.cdn = ThreadingHTTPServer(("127.0.0.2", 0), self._handler("cdn"))
        for server in (self.api, self.cdn):
            server.daemon_threads = True
            server.handle_error = _quiet_when_the_client_left
        self.base_url = f"http://127.0.0.1:{self.api.server_port}"
        self.cdn_url = f"http://127.0.0.2:{self.cdn.server_port}"
        for server in (self.api, self.cdn):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        for server in (self.api, self.cdn):
            server.shutdown()
            server.server_close()

    def reset(self) -> None:
        self.release.set()
        with self.lock:
            self.state = State()
        self.release = threading.Event()

    # -- what tests read -------------------------------------------------
    @property
    def generations(self) -> list[Received]:
        return [
            r for r in self.state.requests if r.host == "api" and r.method == "POST"
        ]

    @property
    def downloads(self) -> list[Received]:
        return [r for r in self.state.requests if r.host == "cdn"]

    # -- what tests plan -------------------------------------------------
    def fail_api(self, status: int, body: Any = None, headers=None, times=1) -> None:
        for _ in range(times):
            self.state.api_faults.append(
                {"status": status, "body": body, "headers": headers or {}}
            )

    def plan_api(self, **fault: Any) -> None:
        """The next generation is answered this way: ``status`` and ``body``
        (a dict is JSON), ``headers``, ``sleep`` first, ``drop`` the
        connection, ``drip`` the body a byte every that many seconds, or
        ``generate`` (make the images, then answer with ``body`` merged
        into the normal answer, or ``shape`` to reshape it, ``no_cost``
        without the cost headers, ``newer`` with that many requests of
        other clients logged after it)."""
        self.state.api_faults.append(fault)

    def fail_downloads(self, times: int = 1, **fault: Any) -> None:
        """Plan a fault for the next downloads of each image made from now."""
        self.state.download_faults.extend([fault] * times)

    def replan_downloads(self, times: int = 0, **fault: Any) -> None:
        """Forget the faults planned for downloads; with ``fault``, the next
        ``times`` downloads of each image made so far meet it instead."""
        with self.lock:
            self.state.download_faults.clear()
            for queue in self.state.cdn_faults.values():
                queue.clear()
                queue.extend([fault] * times)

    # -- the servers -----------------------------------------------------
    def _handler(self, host: str):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, a
            # kept-alive connection waits for a delayed ACK on every answer.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, headers=None, ctype=None):
                self.send_response(status)
                if ctype:
                    self.send_header("Content-Type", ctype)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def _json(self, status: int, obj: Any, headers=None) -> None:
                self._send(
                    status, json.dumps(obj).encode(), headers, "application/json"
                )

            def _error(self, status: int, message: Any, headers=None) -> None:
                self._json(
                    status,
                    {
                        "message": message,
                        "path": self.path,
                        "requestId": f"req-{status}-{len(fake.state.requests)}",
                        "statusCode": status,
                        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    },
                    headers,
                )

            def do_POST(self) -> None:
                arrived = fake_service.utc_now()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                received = Received(host, "POST", self.path, dict(self.headers), body)
                with fake.lock:
                    fake.state.requests.append(received)
                    fault = (
                        fake.state.api_faults.popleft()
                        if fake.state.api_faults
                        else None
                    )
                if host != "api" or self.path != GENERATIONS_PATH:
                    return self._error(404, "Cannot POST " + self.path)
                request_id = self.headers.get("X-Client-Request-Id")
                asked = body.get("model") if isinstance(body, dict) else None
                if fault and not fault.get("generate"):
                    fake._log(request_id, "failed", 0, asked, arrived)
                    return self._fault(fault)
                state = fake.state
                with fake.lock:
                    state.in_flight += 1
                    state.most_in_flight = max(state.most_in_flight, state.in_flight)
                try:
                    if state.barrier is not None:
                        state.barrier.wait(30)
                    if state.delay:
                        time.sleep(state.delay)
                finally:
                    with fake.lock:
                        state.in_flight -= 1
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    fake._log(request_id, "failed", 0, asked, arrived)
                    return self._error(401, "Invalid API key")
                model = body.get("model") if isinstance(body, dict) else None
                if model not in (*SCHEMA_FILES, SHORT_ID):
                    return self._error(400, "Body validation error! model is invalid")
                schema = load_schema(model, state.preview_2026)
                try:
                    openapi.validate(body, strict(schema["request_schema"]))
                except jsonschema.ValidationError as ex:
                    fake._log(request_id, "failed", 0, asked, arrived)
                    where = ".".join(str(p) for p in ex.absolute_path) or "body"
                    return self._error(
                        400, f"Body validation error! {where}: {ex.message}"
                    )
                answer, headers = fake._answer(body, schema, request_id, arrived)
                if fault and fault.get("newer"):
                    # Other requests of the account, made while this one ran.
                    fake.add_log_rows(fault["newer"], body["model"])
                if fault and fault.get("no_cost"):
                    headers = {k: v for k, v in headers.items() if "aimlapi" not in k}
                if fault and fault.get("headers"):
                    headers = {**headers, **fault["headers"]}
                if fault:
                    if fault.get("shape"):
                        answer = fault["shape"](answer)
                    answer = {**answer, **fault.get("body", {})}
                    if fault.get("sleep"):
                        time.sleep(fault["sleep"])
                    if fault.get("drop"):
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    if fault.get("drip"):
                        return self._drip(json.dumps(answer).encode(), fault["drip"])
                self._json(fault.get("status", 200) if fault else 200, answer, headers)

            def _drip(self, data: bytes, every: float) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    for byte in data:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        if fake.release.wait(every):
                            return
                except OSError:
                    pass

            def _fault(self, fault: dict[str, Any]) -> None:
                if fault.get("sleep"):
                    fake.release.wait(fault["sleep"])
                if fault.get("drop"):
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault.get("drip"):
                    return self._drip(json.dumps(fault["body"]).encode(), fault["drip"])
                status = fault["status"]
                body = fault.get("body")
                if body is None:
                    return self._error(status, "Planned failure", fault.get("headers"))
                if isinstance(body, (bytes, str)):
                    data = body.encode() if isinstance(body, str) else body
                    return self._send(status, data, fault.get("headers"), "text/html")
                return self._json(status, body, fault.get("headers"))

            def _service(self, url: urllib.parse.SplitResult) -> None:
                service = fake.state.service
                query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
                with fake.lock:
                    planned = service.faults.get(url.path)
                    fault = planned.pop(0) if planned else None
                if fault:
                    return self._planned(fault)
                keyless = url.path == "/v1/models"
                if not keyless and self.headers.get("Authorization") != f"Bearer {KEY}":
                    return self._error(401, "Invalid API key")
                try:
                    with fake.lock:
                        if url.path == "/v2/logs":
                            body = fake_service.logs(service, query)
                        elif url.path == "/v2/billing":
                            body = fake_service.billing(service, query)
                        else:
                            body = fake_service.models(
                                service,
                                query,
                                [
                                    m
                                    for m in SCHEMA_FILES
                                    if m not in fake.state.gone_models
                                ],
                                fake.state.credits_per_image / CREDITS_PER_USD,
                            )
                        data = fake_service.answer(url.path, body, service)
                except fake_service.Refusal as ex:
                    return self._error(ex.status, ex.message, ex.headers)
                if keyless:
                    tag = fake_service.etag(data)
                    if self.headers.get("If-None-Match") == tag:
                        return self._send(304, b"", {"ETag": tag})
                    return self._send(200, data, {"ETag": tag}, "application/json")
                self._send(200, data, ctype="application/json")

            def _planned(self, fault: dict[str, Any]) -> None:
                """A planned answer: ``status``, ``headers``, ``body`` (bytes,
                or JSON), sent ``gzip``-encoded if asked."""
                body = fault.get("body", b"")
                if not isinstance(body, bytes):
                    body = json.dumps(body).encode()
                headers = dict(fault.get("headers") or {})
                if fault.get("gzip"):
                    body = gzip.compress(body, 9)
                    headers["Content-Encoding"] = "gzip"
                self._send(fault.get("status", 200), body, headers, "application/json")

            def do_GET(self) -> None:
                received = Received(host, "GET", self.path, dict(self.headers))
                with fake.lock:
                    fake.state.requests.append(received)
                url = urllib.parse.urlsplit(self.path)
                if host == "api" and url.path in SERVICE_PATHS:
                    return self._service(url)
                name = url.path.rsplit("/", 1)[-1]
                with fake.lock:
                    queue = fake.state.cdn_faults.get(name)
                    fault = queue.popleft() if queue else None
                    data = fake.state.files.get(name)
                if host != "cdn" or data is None:
                    if fault and fault.get("redirect"):
                        return self._send(
                            302, b"", {"Location": fault["redirect"]}, "text/plain"
                        )
                    return self._send(404, b"not found", ctype="text/plain")
                if fake.state.download_delay:
                    time.sleep(fake.state.download_delay)
                if fault:
                    self._cdn_fault(fault, data)
                    return
                self._send(200, data, ctype="image/png")

            def _cdn_fault(self, fault: dict[str, Any], data: bytes) -> None:
                if fault.get("hold"):
                    # A download that hangs until the test lets go.
                    fake.release.wait(60)
                if fault.get("status"):
                    return self._send(
                        fault["status"],
                        b"CDN error",
                        {"Retry-After": "0"},
                        "text/plain",
                    )
                if fault.get("truncate"):
                    # A cut connection: fewer bytes than Content-Length says.
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: fault["truncate"]])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault.get("half"):
                    # Half an image whose Content-Length says it is whole.
                    return self._send(200, data[: len(data) // 2], ctype="image/png")
                if fault.get("gzip"):
                    return self._send(
                        200, data, {"Content-Encoding": "gzip"}, "image/png"
                    )
                if fault.get("drip"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    try:
                        for i in range(0, len(data), 64):
                            self.wfile.write(data[i : i + 64])
                            self.wfile.flush()
                            if fake.release.wait(fault["drip"]):
                                return
                    except OSError:
                        pass
                    return
                if fault.get("body") is not None:
                    return self._send(200, fault["body"], ctype="image/png")
                if fault.get("redirect"):
                    return self._send(
                        302, b"", {"Location": fault["redirect"]}, "text/plain"
                    )
                self._send(200, data, ctype="image/png")

        return Handler

    def plan_service(self, path: str, times: int = 1, **fault: Any) -> None:
        """The next ``times`` requests to a service endpoint (``/v2/logs``,
        ``/v1/models``, ``/v2/billing``) are answered with ``status``,
        ``headers`` and ``body``, ``gzip``-encoded if asked."""
        with self.lock:
            self.state.service.faults.setdefault(path, []).extend([fault] * times)

    def add_log_rows(self, count: int, model: str, status: str = "succeeded") -> None:
        """``count`` requests of other clients, made now."""
        for _ in range(count):
            self._log(None, status, 0 if status == "failed" else 1000, model)

    @property
    def log(self) -> list[dict[str, Any]]:
        """The API's log as it would list it, oldest first, unlisted rows too."""
        return [row.published() for row in self.state.service.log]

    def _log(
        self,
        request_id: str | None,
        status: str,
        credits: float,
        model: Any,
        created: Any = None,
    ) -> str:
        with self.lock:
            log = self.state.service.log
            inference_id = f"inf-{len(log) + 1}"
            self.state.service.add(
                LogRow(
                    created=created or fake_service.utc_now(),
                    status=status,
                    model=model if isinstance(model, str) else "unknown",
                    credits=round(credits),
                    client_request_id=request_id
                    if request_id and CLIENT_REQUEST_ID.fullmatch(request_id)
                    else None,
                    inference_id=inference_id,
                    request_id=f"req-{len(log) + 1}",
                )
            )
        return inference_id

    def _answer(
        self,
        body: dict[str, Any],
        schema: dict[str, Any],
        request_id: str | None,
        arrived: Any,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        state = self.state
        count = int(body.get("num_images", 1))
        width, height = SIZES[body.get("aspect_ratio", "1:1")]
        seed = body.get("seed", 1234)
        made = []
        for i in range(count):
            data = png(
                width,
                height,
                f"{body['prompt'][:20]}|{seed}|{i}".encode(),
                state.png_extra,
            )
            name = hashlib.sha256(data).hexdigest()[:16] + "_output.png"
            with self.lock:
                state.files[name] = data
                state.cdn_faults[name] = deque(state.download_faults)
            made.append((name, data))
        credits = state.credits_per_image * count
        inference_id = self._log(
            request_id, "succeeded", credits, body["model"], arrived
        )
        headers = {
            "x-inference-id": inference_id,
            "x-aimlapi-credits-used": f"{credits:g}",
            "x-aimlapi-usd-spent": f"{credits / CREDITS_PER_USD:.6f}",
        }
        if request_id:
            headers["X-Client-Request-Id"] = request_id
        shape = state.response_shape or (
            "images" if "response_schema" not in schema else "data"
        )
        older = [
            {
                "url": f"{self.cdn_url}/files/{name}",
                "content_type": "image/png",
                "file_name": "output.png",
                "file_size": len(data),
            }
            for name, data in made
        ]
        inline = body.get("convert_base64_to_url") is False
        newer = [
            {
                "url": None if inline else f"{self.cdn_url}/generations/{name}",
                "b64_json": base64.b64encode(data).decode() if inline else None,
                **({"prompt": state.enhanced_prompt} if state.enhanced_prompt else {}),
            }
            for name, data in made
        ]
        if shape == "images":
            answer: dict[str, Any] = {"images": older, "seed": seed}
        elif shape == "both":
            answer = {"images": [], "data": newer, "seed": seed}
        else:
            answer = {"data": newer}
        usage = {
            "body": {"credits_used": credits},
            "tokens": {"tokens_used": credits},
            "headers": None,
        }[state.cost_in]
        published = schema.get("response_schema", {}).get("properties", {})
        in_usage = published.get("meta", {}).get("properties", {}).get("usage", {})
        if state.cost_in == "body" and "usd_spent" in in_usage.get("properties", {}):
            usage = {**usage, "usd_spent": credits / CREDITS_PER_USD}
        if shape != "images" and usage is not None:
            answer["meta"] = {"usage": usage}
        if state.cost_in == "body" and shape == "data" and not state.enhanced_prompt:
            # The documented shape for the newer models, as published.
            openapi.validate(
                answer,
                openapi.nullable(
                    load_schema("google/imagen-4.0-generate-001")["response_schema"]
                ),
            )
        return answer, headers
