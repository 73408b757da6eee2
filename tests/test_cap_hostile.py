"""XML attacks against the CAP parser: each is refused, quickly, touching no file and no network."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from warnd.core.cap import parse
from warnd.core.errors import CapError

NS = "urn:oasis:names:tc:emergency:cap:1.2"
BODY = (
    "<identifier>{text}</identifier><sender>s</sender><sent>2025-06-14T08:15:00+08:00</sent>"
    "<status>Actual</status><msgType>Alert</msgType><scope>Public</scope>"
)


def alert(text: str = "x", extra: str = "", dtd: str = "") -> str:
    return (
        f'<?xml version="1.0"?>\n{dtd}<alert xmlns="{NS}">{BODY.format(text=text)}{extra}</alert>'
    )


def refused_fast(data: bytes) -> str:
    """Parse hostile bytes: must raise a one-line CapError well under a second."""
    start = time.perf_counter()
    with pytest.raises(CapError) as caught:
        parse(data, source="evil.xml")
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"took {elapsed:.2f}s"
    text = str(caught.value)
    assert "\n" not in text and text.startswith("evil.xml")
    return text


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A real TCP socket on 127.0.0.1: any fetch attempt would land in its backlog."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def assert_no_connection(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        conn, _ = sock.accept()
        conn.close()


def url(sock: socket.socket, path: str) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}/{path}"


def _laugh(i: int) -> str:
    refs = f"&lol{i - 1};" * 10
    return f'<!ENTITY lol{i} "{refs}">'


LAUGHS = '<!ENTITY lol0 "lol">' + "".join(_laugh(i) for i in range(1, 10))


def test_billion_laughs() -> None:
    data = alert("&lol9;", dtd=f"<!DOCTYPE alert [{LAUGHS}]>").encode()
    assert "DOCTYPE/entities are not allowed" in refused_fast(data)


def test_quadratic_blowup() -> None:
    big = "A" * 100_000
    data = alert("&a;" * 20_000, dtd=f'<!DOCTYPE alert [<!ENTITY a "{big}">]>').encode()
    assert len(data) < 5 * 1024 * 1024  # under the size limit: the DOCTYPE is what refuses it
    assert "DOCTYPE/entities are not allowed" in refused_fast(data)


def test_billion_laughs_in_utf16_is_seen_too() -> None:
    data = alert("&lol9;", dtd=f"<!DOCTYPE alert [{LAUGHS}]>")
    data = data.replace('version="1.0"', 'version="1.0" encoding="UTF-16"')
    assert "DOCTYPE/entities are not allowed" in refused_fast(data.encode("utf-16"))


def test_external_file_entity_is_never_opened(tmp_path: Path) -> None:
    # A FIFO: whoever opens it for reading blocks until a writer comes. If the parser tried to
    # read the entity, it would hang; the timer is only a safety net that unblocks it.
    fifo = tmp_path / "secret"
    os.mkfifo(fifo)
    readers: list[bool] = []

    def unblock() -> None:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO unless someone reads
        except OSError:
            return
        readers.append(True)
        os.write(fd, b"stolen")
        os.close(fd)

    guard = threading.Timer(5.0, unblock)
    guard.start()
    try:
        dtd = f'<!DOCTYPE alert [<!ENTITY xxe SYSTEM "file://{fifo}">]>'
        text = refused_fast(alert("&xxe;", dtd=dtd).encode())
    finally:
        guard.cancel()
    unblock()  # nobody may be reading it now either
    assert readers == []
    assert "DOCTYPE/entities are not allowed" in text and "stolen" not in text


def test_external_network_entity_fetches_nothing(listener: socket.socket) -> None:
    dtd = f'<!DOCTYPE alert [<!ENTITY xxe SYSTEM "{url(listener, "secret")}">]>'
    assert "DOCTYPE/entities are not allowed" in refused_fast(alert("&xxe;", dtd=dtd).encode())
    assert_no_connection(listener)


def test_parameter_entity_fetches_nothing(listener: socket.socket) -> None:
    dtd = f'<!DOCTYPE alert [<!ENTITY % ext SYSTEM "{url(listener, "x.dtd")}"> %ext;]>'
    assert "DOCTYPE/entities are not allowed" in refused_fast(alert(dtd=dtd).encode())
    assert_no_connection(listener)


def test_external_dtd_is_not_retrieved(listener: socket.socket) -> None:
    dtd = f'<!DOCTYPE alert SYSTEM "{url(listener, "cap.dtd")}">'
    assert "DOCTYPE/entities are not allowed" in refused_fast(alert(dtd=dtd).encode())
    assert_no_connection(listener)


def test_external_dtd_in_utf16_is_not_retrieved(listener: socket.socket) -> None:
    dtd = f'<!DOCTYPE alert SYSTEM "{url(listener, "cap.dtd")}">'
    data = alert(dtd=dtd).replace('version="1.0"', 'version="1.0" encoding="UTF-16"')
    assert "DOCTYPE/entities are not allowed" in refused_fast(data.encode("utf-16"))
    assert_no_connection(listener)


def test_xinclude_is_refused_and_not_processed(listener: socket.socket, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("stolen")
    xi = 'xmlns:xi="http://www.w3.org/2001/XInclude"'
    for href in (secret.as_uri(), url(listener, "x.xml")):
        extra = f'<note><xi:include {xi} href="{href}" parse="text"/></note>'
        text = refused_fast(alert(extra=extra).encode())
        assert "XInclude is not allowed" in text and "stolen" not in text
    assert_no_connection(listener)


def test_schema_location_is_not_fetched(listener: socket.socket) -> None:
    xsi = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    loc = f'xsi:schemaLocation="{NS} {url(listener, "cap.xsd")}"'
    data = alert().replace(f'<alert xmlns="{NS}">', f'<alert xmlns="{NS}" {xsi} {loc}>').encode()
    start = time.perf_counter()
    assert parse(data).identifier == "x"
    assert time.perf_counter() - start < 1.0
    assert_no_connection(listener)


def test_deep_nesting_is_refused() -> None:
    depth = 100_000
    data = alert(extra="<note>" + "<x>" * depth + "</x>" * depth + "</note>").encode()
    assert "malformed XML" in refused_fast(data)


def test_oversize_is_refused_unparsed() -> None:
    data = alert(extra="<note>" + "A" * (5 * 1024 * 1024) + "</note>").encode()
    assert "larger than" in refused_fast(data)


def test_undeclared_entity_is_refused() -> None:
    assert "malformed XML" in refused_fast(alert("&xxe;").encode())
