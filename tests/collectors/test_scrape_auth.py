"""`[source] kind = "scrape"` honours bearer_token_file, ca_file and tls_verify.

vLLM's --api-key protects /metrics on some setups; before, the scrape source sent no token
and ignored the TLS settings. Real servers on 127.0.0.1: one that demands the token, and the
same behind TLS with a self-signed certificate made here by the openssl CLI.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from specwise.cli import main

PAGE = Path(__file__).resolve().parent.parent / "fixtures" / "vllm" / "metrics-ngram-5-final.txt"
TOKEN = "s3cret-Token_42"


class _TokenHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            body, status = b'{"error": "Unauthorized"}', 401
        else:
            body, status = PAGE.read_bytes(), 200
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def _serve(context: ssl.SSLContext | None = None) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    server.daemon_threads = True
    scheme = "http"
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def token_server() -> Iterator[str]:
    yield from _serve()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("neither the openssl CLI nor the cryptography package is available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    for url in _serve(context):
        yield url, cert


def _config(tmp_path: Path, url: str, **source: object) -> Path:
    lines = [f'urls = ["{url}"]']
    for key, value in source.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path = tmp_path / "specwise.toml"
    path.write_text("[source]\n" + "\n".join(lines) + "\n")
    return path


def _token_file(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return str(path)


def _once(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object], str]:
    status = main(["run", "--config", str(config), "--once", "--json"])
    out, err = capsys.readouterr()
    return status, json.loads(out), err


def test_scrape_source_sends_the_bearer_token(
    tmp_path: Path, token_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, token_server, bearer_token_file=_token_file(tmp_path))
    status, state, err = _once(cfg, capsys)
    assert status == 0, err
    [source] = state["sources"]  # type: ignore[misc]
    assert source["up"] is True
    assert TOKEN not in err  # the secret is never printed


def test_scrape_source_without_the_token_says_which_setting_to_add(
    tmp_path: Path, token_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _state, err = _once(_config(tmp_path, token_server), capsys)
    assert status == 1
    assert err.count("Error:") == 1
    assert "answered HTTP 401" in err
    assert "set [source] bearer_token_file" in err


def test_scrape_source_verifies_tls_with_ca_file(
    tmp_path: Path, tls_server: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, cert = tls_server
    token = _token_file(tmp_path)
    status, state, err = _once(
        _config(tmp_path, url, bearer_token_file=token, ca_file=str(cert)), capsys
    )
    assert status == 0, err
    assert state["sources"][0]["up"] is True  # type: ignore[index]
    # without the CA the self-signed certificate is refused: TLS verify is on by default
    status, state, err = _once(_config(tmp_path, url, bearer_token_file=token), capsys)
    assert status == 1
    assert "TLS to" in err
    assert "failed" in err


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_scrape_source_honours_tls_verify_false(
    tmp_path: Path, tls_server: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = tls_server
    cfg = _config(tmp_path, url, bearer_token_file=_token_file(tmp_path), tls_verify=False)
    status, state, err = _once(cfg, capsys)
    assert status == 0, err
    assert state["sources"][0]["up"] is True  # type: ignore[index]
