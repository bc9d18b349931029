"""Errors are one line, as the README promises: `Error: ...` on stderr, exit status 1.

First the cases seen in issue 12 (each failed before: a traceback or a misleading line),
then a fuzz test over the CLI's inputs (URLs, files, config values, secret files) that
asserts the same for anything a user can type. Everything runs in-process through
``specwise.cli.main`` except the IPv6 listener, which needs a real ``specwise run``.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specwise.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vllm"
PAGE = FIXTURES / "metrics-ngram-5-final.txt"
EARLIER = FIXTURES / "metrics-ngram-1-after-20req.txt"
CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1: refused at once, no network


def cli(argv: Sequence[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def one_error(status: int, err: str) -> str:
    """Assert exit 1 and exactly one `Error:` line, the last, and no traceback; return it."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert status == 1, err
    assert len(errors) == 1, err
    assert lines[-1] == errors[0], err
    return errors[0]


def ok_or_one_error(status: int, err: str) -> None:
    """What any input may give: success, or one clean Error line and exit 1."""
    assert status in (0, 1), (status, err)
    if status == 1:
        one_error(status, err)
    else:
        assert "Traceback" not in err, err


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # relative paths of fuzzed configs stay in here
    return


def _write_config(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _prometheus_config(tmp_path: Path, **source: str) -> str:
    lines = ['kind = "prometheus"', f'url = "{CLOSED}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in source.items()]
    return _write_config(tmp_path / "prod.toml", "[source]\n" + "\n".join(lines) + "\n")


def _scrape_config(tmp_path: Path, **source: str) -> str:
    lines = [f'urls = ["{CLOSED}/metrics"]']
    lines += [f"{k} = {json.dumps(v)}" for k, v in source.items()]
    return _write_config(tmp_path / "prod.toml", "[source]\n" + "\n".join(lines) + "\n")


# -- secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\xff\xfe\x00SeKrEt\n", r"the file is not UTF-8 text \(byte 0xff at offset 0\)"),
        ("SeK€rEt\n".encode(), r"character 4 is not ASCII"),
        (b"SeKrEt-1\nSeKrEt-2\n", r"the file holds 2 lines; put the secret alone on one line"),
        (b"SeK rEt\n", r"character 4 is a space or a control character"),
        (b"\n\n", r"the file is empty"),
    ],
)
@pytest.mark.parametrize("kind", ["prometheus", "scrape"])
def test_bad_token_files_are_one_error_naming_config_and_token_file(
    tmp_path: Path, content: bytes, says: str, kind: str
) -> None:
    """Before: UnicodeDecodeError, UnicodeEncodeError at request time, or "Cannot reach
    Prometheus ... (InvalidHeader)" for a two-line file; the scrape source ignored it."""
    token = tmp_path / "token"
    token.write_bytes(content)
    make = _prometheus_config if kind == "prometheus" else _scrape_config
    cfg = make(tmp_path, bearer_token_file=str(token))
    line = one_error(*cli(["run", "--config", cfg, "--once"])[::2])
    assert line.startswith(f"Error: {cfg}: [source] bearer_token_file = '{token}': ")
    assert re.search(says, line), line
    assert "Cannot reach" not in line
    assert "SeK" not in line  # the secret is never echoed


def test_non_latin1_basic_auth_password_is_sent_not_a_traceback(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("pässwörd€\n")
    cfg = _prometheus_config(
        tmp_path, basic_auth_user="specwise", basic_auth_password_file=str(password)
    )
    line = one_error(*cli(["run", "--config", cfg, "--once"])[::2])
    assert "Cannot reach Prometheus at http://127.0.0.1:1" in line  # it got as far as sending


def test_secret_errors_name_the_config_file(tmp_path: Path) -> None:
    cfg = _prometheus_config(tmp_path, bearer_token_file=str(tmp_path / "missing"))
    line = one_error(*cli(["run", "--config", cfg, "--once"])[::2])
    assert line.startswith(f"Error: {cfg}: [source] bearer_token_file = ")
    assert "cannot read it (No such file or directory)" in line


# -- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["recommend", "--prometheus", "127.0.0.1:19090"],
        ["report", "--prometheus", "127.0.0.1:19090", "--before", "-2h..-1h", "--after", "-1h.."],
        ["recommend", "--url", "127.0.0.1:8000/metrics"],
    ],
)
def test_url_without_scheme_says_so(argv: list[str]) -> None:
    """Before: "Cannot reach Prometheus at 127.0.0.1:19090 (InvalidSchema); check the URL
    and that the server is up", which sends the user to check a server that is up."""
    line = one_error(*cli(argv)[::2])
    assert "'127.0.0.1:" in line
    assert "must start with http:// or https://" in line
    assert "Cannot reach" not in line


@pytest.mark.parametrize("flag", ["0", "nan", "-1"])
def test_bad_http_timeouts_are_one_error(flag: str) -> None:
    line = one_error(*cli(["recommend", "--url", f"{CLOSED}/metrics", "--timeout", flag])[::2])
    assert "timeout" in line
    line = one_error(*cli(["scrape", f"{CLOSED}/metrics", "--timeout", flag])[::2])
    assert "--timeout" in line


# -- files -----------------------------------------------------------------------------


def test_binary_file_passed_to_scrape_is_named_binary(tmp_path: Path) -> None:
    """Before: "ends mid-line (last line '...\\x00\\x00...'), so it was truncated; scrape it
    again", with the file's raw bytes printed."""
    blob = tmp_path / "model.bin"
    blob.write_bytes(bytes(range(256)) * 20)
    line = one_error(*cli(["scrape", str(blob)])[::2])
    assert f"metrics file {blob} is binary data, not a Prometheus text page" in line
    assert "truncated" not in line
    assert "\\x" not in line


@pytest.mark.parametrize("command", [["run", "--once"], ["rules"]])
def test_config_that_is_not_utf8_is_one_error(tmp_path: Path, command: list[str]) -> None:
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes(b'[source]\nurls = ["http://127.0.0.1:1/metrics"]  # caf\xe9\n')
    line = one_error(*cli([command[0], "--config", str(cfg), *command[1:]])[::2])
    assert "latin1.toml' is not UTF-8 text (byte 0xe9" in line


def test_report_into_an_unusable_folder_is_one_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["report", "--before", str(EARLIER), "--after", str(PAGE), "--cost", "ngram"]
    line = one_error(*cli([*argv, "--out", str(blocker / "sub")])[::2])
    assert str(blocker) in line


# -- k bounds --------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("k_max", ["0", "129", "100000000", "-3"])
def test_k_max_is_bounded_everywhere(tmp_path: Path, k_max: str) -> None:
    """Before: `model --k-max 0` said every k >= 1 is slower (k = 1 gives 1.36x), and
    `--k-max 100000000` ran for minutes; recommend and the config bound it differently."""
    line = one_error(*cli(["model", "--alpha", "0.7", "--cost", "0.05", "--k-max", k_max])[::2])
    assert f"--k-max {k_max} must be between 1 and 128" in line
    line = one_error(*cli(["recommend", "--after", str(PAGE), "--k-max", k_max])[::2])
    assert f"--k-max {k_max} must be between 1 and 128" in line
    cfg = _write_config(
        tmp_path / "k.toml", f'[source]\nurls = ["{CLOSED}/metrics"]\n[policy]\nk_max = {k_max}\n'
    )
    line = one_error(*cli(["rules", "--config", cfg])[::2])
    assert f"{cfg}: [policy] k_max = {k_max} must be a whole number between 1 and 128" in line


def test_k_max_128_is_priced_quickly() -> None:
    status, out, err = cli(["model", "--alpha", "0.99", "--cost", "0.001", "--k-max", "128"])
    assert status == 0, err
    assert "<- optimal" in out


# -- config messages -------------------------------------------------------------------


def test_class_errors_count_from_one_and_name_the_file(tmp_path: Path) -> None:
    """Before: `[classes.0] cost = ...` (a table nobody wrote) and selector errors with no
    file name."""
    cfg = _write_config(
        tmp_path / "c.toml",
        f'[source]\nurls = ["{CLOSED}/metrics"]\n'
        '[[classes]]\nname = "code"\n[[classes]]\nname = "chat"\nmatch = "{model_name=chat}"\n',
    )
    line = one_error(*cli(["run", "--config", cfg, "--once"])[::2])
    assert line.startswith(f"Error: {cfg}: [[classes]] #2 ('chat') match: ")
    assert "classes.1" not in line


# -- the listener ----------------------------------------------------------------------


def test_listen_port_in_use_is_one_error(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cfg = _scrape_config(tmp_path)
        with open(cfg, "a") as f:
            f.write(f'[controller]\nlisten = "127.0.0.1:{port}"\n')
        line = one_error(*cli(["run", "--config", cfg])[::2])
    assert f"Cannot listen on 127.0.0.1:{port} (Address already in use)" in line
    assert "set [controller] listen to a free port" in line


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_ipv6_listen_address_serves_the_controller(tmp_path: Path) -> None:
    """Before: `[controller] listen = "[::1]:9464"` was rejected as not host:port."""
    cfg = _scrape_config(tmp_path)
    with open(cfg, "a") as f:
        f.write('[controller]\nlisten = "[::1]:0"\ninterval = "1h"\n')
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "specwise", "run", "--config", cfg],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 60
        found = None
        while found is None and time.monotonic() < deadline:
            assert proc.poll() is None, err_path.read_text()
            found = re.search(r"http://\[::1\]:(\d+)/metrics", err_path.read_text())
            time.sleep(0.1)
        assert found is not None, err_path.read_text()
        resp = requests.get(f"http://[::1]:{found.group(1)}/metrics", timeout=10)
        assert resp.status_code == 200
        assert "specwise_" in resp.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- fuzz ------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=int(os.environ.get("SPECWISE_FUZZ_EXAMPLES", "50")),
    deadline=None,
    derandomize=not os.environ.get("SPECWISE_FUZZ_EXAMPLES"),  # fixed inputs: never bad luck
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: URLs that reach nothing (port 1, or rejected before any request): no test needs a network.
URL_TABLE = [
    "",
    "127.0.0.1:19090",
    "localhost:9090/metrics",
    "http://",
    "https://",
    "http:///metrics",
    "http://127.0.0.1:99999/metrics",
    "http://127.0.0.1:abc/",
    "http://127.0.0.1:-1/",
    "http://[::1/metrics",
    "http://[::1]:1/metrics",
    "http://127.0.0.1:1/metrics",
    "https://127.0.0.1:1/metrics",
    "http://localhost:1/api/v1",
    "http://127.0.0.1:1/\x00",
    "http://127.0.0.1:1/ metrics",
    "ftp://127.0.0.1/metrics",
    "file:///etc/passwd",
    "HTTP://127.0.0.1:1/metrics",
    "http://user:pass@127.0.0.1:1/metrics",
    "http://127.0.0.1:1/metrics?x=€",
]


def _not_a_web_url(text: str) -> bool:
    """Random text that cannot reach a real host (no scheme after stripping what urlsplit
    strips), and is not '-' (stdin)."""
    head = text.lstrip("".join(chr(c) for c in range(0x21))).lower()
    return text != "-" and not head.startswith(("http:", "https:"))


urls = st.one_of(st.sampled_from(URL_TABLE), st.text(max_size=40).filter(_not_a_web_url))


@FUZZ
@given(url=urls)
def test_fuzz_urls(url: str) -> None:
    for argv in (
        ["recommend", "--prometheus", url, "--timeout", "2"],
        ["recommend", "--url", url, "--timeout", "2"],
        ["scrape", url, "--timeout", "2"],
    ):
        one_error(*cli(argv)[::2])


@FUZZ
@given(content=st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_fuzz_secret_files(tmp_path: Path, content: bytes) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(content)
    for extra in (
        {"bearer_token_file": str(secret)},
        {"basic_auth_user": "u", "basic_auth_password_file": str(secret)},
    ):
        # a usable secret gets as far as the closed port; a bad one is named: both exit 1
        one_error(*cli(["run", "--config", _prometheus_config(tmp_path, **extra), "--once"])[::2])


def _page_variants() -> st.SearchStrategy[bytes]:
    lines = PAGE.read_text().splitlines()
    numbers = st.sampled_from(["NaN", "-1", "+Inf", "-Inf", "1e308", "0", "99999", "x", ""])

    def mutate(index: int, value: str) -> bytes:
        out = list(lines)
        line = out[index % len(lines)]
        if not line.startswith("#") and " " in line:
            out[index % len(lines)] = line.rsplit(" ", 1)[0] + " " + value
        else:
            out[index % len(lines)] = value
        return ("\n".join(out) + "\n").encode()

    return st.one_of(
        st.builds(mutate, st.integers(min_value=0), numbers | st.text(max_size=20)),
        st.binary(max_size=200),
    )


@FUZZ
@given(content=_page_variants())
def test_fuzz_metrics_files(tmp_path: Path, content: bytes) -> None:
    page = tmp_path / "page.txt"
    page.write_bytes(content)
    ok_or_one_error(*cli(["scrape", str(page)])[::2])
    ok_or_one_error(*cli(["recommend", "--after", str(page)])[::2])
    ok_or_one_error(*cli(["recommend", "--before", str(EARLIER), "--after", str(page)])[::2])


@FUZZ
@given(content=st.binary(max_size=120) | st.text(max_size=120).map(str.encode))
def test_fuzz_config_files(tmp_path: Path, content: bytes) -> None:
    cfg = tmp_path / "fuzz.toml"
    cfg.write_bytes(content)
    ok_or_one_error(*cli(["rules", "--config", str(cfg)])[::2])
    one_error(*cli(["run", "--config", str(cfg), "--once"])[::2])  # never a source that answers


_KEYS = {
    "controller": ["interval", "listen", "stale_after", "state_file"],
    "source": ["kind", "urls", "url", "timeout", "window", "group_by", "tls_verify",
               "bearer_token_file", "ca_file", "tenant", "basic_auth_user"],
    "estimator": ["window", "mode", "half_life", "min_drafts"],
    "policy": ["k_max", "min_gain", "min_dwell", "max_changes_per_hour", "tolerance",
               "off_mode", "verify_slope"],
    "actuator": ["kind", "dir", "argv", "min_interval", "timeout"],
    "alerts": ["alertmanager_url", "class_labels", "speedup_below", "rate_window", "stale_for",
               "not_paying_severity", "acceptance_drop_ratio"],
    "classes": ["name", "match", "cost", "drafter", "k", "speculative_config"],
}  # fmt: skip

#: Values of keys that name files, URLs or commands come from safe lists: a fuzzed config
#: must not reach the network, write outside the test's folder or run anything but `true`.
_SAFE = {
    "urls": st.sampled_from([[f"{CLOSED}/metrics"], [], ["127.0.0.1:1"], [1], "x"]),
    "url": st.sampled_from([CLOSED, "", "127.0.0.1:1", "ftp://x", 5]),
    "alertmanager_url": st.sampled_from(["", CLOSED, "nope", 3]),
    "state_file": st.sampled_from(["", "state.json", "no/such/dir/state.json", "."]),
    "dir": st.sampled_from(["", "out", "."]),
    "argv": st.sampled_from([["true"], [], ["true", "{class}", "{k}"], "true", [1]]),
    "bearer_token_file": st.sampled_from(["", "missing", "."]),
    "ca_file": st.sampled_from(["", "missing"]),
}

_scalars = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["5m", "0s", "1h30m", "-5m", "127.0.0.1:0", "[::1]:0", "eagle", "ngram",
                     "sliding", "ewma", "file", "command", "dry-run", "scrape", "prometheus",
                     '{model_name="code"}', '{model_name=~"("}', "{", "class"]),
)  # fmt: skip
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3), st.dictionaries(
    st.text(min_size=1, max_size=5), _scalars, max_size=2))  # fmt: skip


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(
            value) else repr(value)  # fmt: skip
    if isinstance(value, (int, str)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


@st.composite
def _configs(draw: st.DrawFn) -> str:
    out = [f'[source]\nurls = ["{CLOSED}/metrics"]\n']
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        section = draw(st.sampled_from(sorted(_KEYS)))
        key = draw(st.sampled_from(_KEYS[section]) | st.text(min_size=1, max_size=6))
        value = draw(_SAFE.get(key, _values))
        header = "[[classes]]" if section == "classes" else f"[{section}]"
        if section == "source":  # override inside the one [source] table
            out[0] += f"{json.dumps(key)} = {_toml(value)}\n"
        else:
            out.append(f"{header}\n{json.dumps(key)} = {_toml(value)}\n")
    return "".join(out)


@FUZZ
@given(text=_configs())
def test_fuzz_config_values(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "values.toml"
    cfg.write_text(text)
    ok_or_one_error(*cli(["rules", "--config", str(cfg)])[::2])
    ok_or_one_error(*cli(["recommend", "--config", str(cfg), "--after", str(PAGE)])[::2])
    one_error(*cli(["run", "--config", str(cfg), "--once"])[::2])


_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**9), max_value=10**9).map(str),
    st.sampled_from(["", "x", "1e400", "0", "0.5", "ngram", "eagle"]),
)


@FUZZ
@given(alpha=_numbers, cost=_numbers, k_max=_numbers, slope=_numbers, k=_numbers)
def test_fuzz_numbers(alpha: str, cost: str, k_max: str, slope: str, k: str) -> None:
    ok_or_one_error(*cli(["model", "--alpha", alpha, "--cost", cost, "--k-max", k_max])[::2])
    ok_or_one_error(
        *cli(["model", "--alpha", "0.7", "--cost", "0.1", "--verify-slope", slope])[::2]
    )
    for flag, value in (("--cost", cost), ("--k-max", k_max), ("--verify-slope", slope),
                        ("--min-drafts", alpha), ("--k", k)):  # fmt: skip
        ok_or_one_error(*cli(["recommend", "--after", str(PAGE), flag, value])[::2])
