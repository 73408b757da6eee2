"""The ``email`` channel against a real aiosmtpd server on loopback with STARTTLS and AUTH.

The certificate chain (a throwaway CA and a server certificate for 127.0.0.1) is generated per
test module with ``cryptography``; the channel trusts it through ``ca_file``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from warnd.config.policy import ChannelConfig
from warnd.core.clock import ManualClock
from warnd.core.errors import ConfigError, PermanentError, TransientError
from warnd.edges.channels import Outbound, build_channel, check_channel
from warnd.edges.channels.email import load_addresses

T0 = dt.datetime(2025, 6, 14, 8, 15, tzinfo=dt.UTC)
USER, PASSWORD = "warnd@example.cn", "smtp-pass-631"


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("warnd test CA"))
        .issuer_name(_name("warnd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certs(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@dataclass
class Mailbox:
    """The aiosmtpd handler: records what arrived and how; answers from a script."""

    received: list[dict[str, Any]] = field(default_factory=list)
    rcpt_answer: str = "250 OK"
    data_answer: str = "250 Message accepted"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if not self.rcpt_answer.startswith("250"):
            return self.rcpt_answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.data_answer.startswith("250"):
            return self.data_answer
        self.received.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "message": message_from_bytes(envelope.content, policy=policy.default),
                "tls": session.ssl is not None,
                "login": session.auth_data if session.authenticated else None,
            }
        )
        return self.data_answer


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False, auth_data=USER if ok else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp(certs: Certs) -> Iterator[tuple[Controller, Mailbox]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    box = Mailbox()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=_free_port(),
        tls_context=context,
        require_starttls=True,
        authenticator=_authenticate,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield controller, box
    finally:
        controller.stop()


def config(port: int, tmp: Path, ca: Path | None, **options: Any) -> ChannelConfig:
    (tmp / "smtp-pass").write_text(PASSWORD + "\n")
    (tmp / "emails.csv").write_text(
        "\ufeffcontact_id,email\nc-433122-a,xianzhang@example.cn\n", encoding="utf-8"
    )
    opts: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "username": USER,
        "password_file": str(tmp / "smtp-pass"),
        "from": "泸溪县应急管理局 <warnd@example.cn>",
        "addresses_file": str(tmp / "emails.csv"),
        "to": ["duty@example.cn"],
        "timeout": 5,
    }
    if ca is not None:
        opts["ca_file"] = str(ca)
    opts.update(options)
    opts = {k: v for k, v in opts.items() if v is not None}
    return ChannelConfig("mail", "email", kinds=("email",), options=MappingProxyType(opts))


def message(**changes: Any) -> Outbound:
    fields: dict[str, Any] = {
        "id": "5b2f0c1d9e8a4f7b",
        "to": "+8613810000001",
        "kind": "email",
        "purpose": "call",
        "text": (
            "【演练】【预警叫应】泸溪县气象台发布暴雨橙色预警信号。区域：泸溪县。"
            "请回复1或4821确认收到。"
        ),
        "warning": "43312241600000_20250614081500",
        "contact": "c-433122-a",
        "drill": True,
        "reply_code": "4821",
        "link": "https://warn.example.cn/a/tok",
    }
    fields.update(changes)
    return Outbound(**fields)


async def test_starttls_auth_and_the_message(
    smtp: tuple[Controller, Mailbox], certs: Certs, tmp_path: Path
) -> None:
    controller, box = smtp
    ch = build_channel(config(controller.port, tmp_path, certs.ca), clock=ManualClock(T0))
    await ch.send(message())
    (got,) = box.received
    assert got["tls"] is True and got["login"] == USER
    assert got["from"] == "warnd@example.cn"
    assert got["to"] == ["xianzhang@example.cn", "duty@example.cn"]
    mail = got["message"]
    assert mail["Subject"] == "【演练】【预警叫应】泸溪县气象台发布暴雨橙色预警信号"
    assert (
        mail["X-Warnd-Message-Id"] == "5b2f0c1d9e8a4f7b"
        and "5b2f0c1d9e8a4f7b" in mail["Message-ID"]
    )
    assert mail["Date"] == "Sat, 14 Jun 2025 08:15:00 +0000"
    body = mail.get_content()
    assert message().text in body and "确认链接：https://warn.example.cn/a/tok" in body
    assert "不算确认" in body


async def test_server_without_starttls_is_refused(certs: Certs, tmp_path: Path) -> None:
    box = Mailbox()
    plain = Controller(box, hostname="127.0.0.1", port=_free_port())
    plain.start()
    try:
        ch = build_channel(config(plain.port, tmp_path, certs.ca), clock=ManualClock(T0))
        with pytest.raises(PermanentError, match="STARTTLS"):
            await ch.send(message())
    finally:
        plain.stop()
    assert box.received == []


async def test_untrusted_certificate_is_permanent(
    smtp: tuple[Controller, Mailbox], tmp_path: Path
) -> None:
    controller, box = smtp
    ch = build_channel(config(controller.port, tmp_path, None), clock=ManualClock(T0))
    with pytest.raises(PermanentError, match="SSLCertVerificationError"):
        await ch.send(message())
    assert box.received == []


async def test_wrong_password_is_permanent(
    smtp: tuple[Controller, Mailbox], certs: Certs, tmp_path: Path
) -> None:
    controller, box = smtp
    cfg = config(controller.port, tmp_path, certs.ca)
    (tmp_path / "smtp-pass").write_text("wrong")
    ch = build_channel(cfg, clock=ManualClock(T0))
    with pytest.raises(PermanentError, match="535"):
        await ch.send(message())
    assert box.received == []


@pytest.mark.parametrize(
    ("rcpt", "data", "error", "code"),
    [
        ("550 5.1.1 No such user", "250 OK", PermanentError, "550"),
        ("451 4.7.1 Greylisted, try later", "250 OK", TransientError, "451"),
        ("250 OK", "452 4.3.1 Insufficient storage", TransientError, "452"),
        ("250 OK", "554 5.7.1 Rejected", PermanentError, "554"),
    ],
)
async def test_smtp_answers_are_classified(
    smtp: tuple[Controller, Mailbox],
    certs: Certs,
    tmp_path: Path,
    rcpt: str,
    data: str,
    error: type[Exception],
    code: str,
) -> None:
    controller, box = smtp
    box.rcpt_answer, box.data_answer = rcpt, data
    ch = build_channel(config(controller.port, tmp_path, certs.ca), clock=ManualClock(T0))
    with pytest.raises(error, match=code):
        await ch.send(message())


async def test_no_server_is_transient_and_no_address_is_permanent(
    certs: Certs, tmp_path: Path
) -> None:
    ch = build_channel(config(_free_port(), tmp_path, certs.ca), clock=ManualClock(T0))
    with pytest.raises(TransientError):
        await ch.send(message())
    only_file = build_channel(
        config(_free_port(), tmp_path, certs.ca, to=None), clock=ManualClock(T0)
    )
    with pytest.raises(PermanentError, match="no e-mail address for c-other"):
        await only_file.send(message(contact="c-other"))


def test_addresses_file_and_config_rules(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("contact_id,email\n\nc-1,a@example.cn\n", encoding="utf-8")
    assert load_addresses(good, source=None, field="f") == {"c-1": "a@example.cn"}
    bad = tmp_path / "bad.csv"
    bad.write_text("contact_id,email\nc-1,a@example.cn\nc-2,not-an-address\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.csv:3"):
        load_addresses(bad, source=None, field="f")
    header = tmp_path / "header.csv"
    header.write_text("id,mail\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"header\.csv:1"):
        load_addresses(header, source=None, field="f")
    base = config(25, tmp_path, None)
    check_channel(base)
    cases = {
        "channels.mail.security": {"security": "none"},
        "channels.mail.password": {"password_file": None},
        "channels.mail.to": {"to": ["nobody"]},
        "channels.mail.host": {"host": None},
    }
    for key, change in cases.items():
        opts = {k: v for k, v in {**base.options, **change}.items() if v is not None}
        with pytest.raises(ConfigError) as err:
            check_channel(
                ChannelConfig("mail", "email", kinds=("email",), options=MappingProxyType(opts))
            )
        assert err.value.field == key, (key, str(err.value))
    with pytest.raises(ConfigError) as err:
        check_channel(ChannelConfig("mail", "email", kinds=("sms",), options=base.options))
    assert err.value.field == "channels.mail.kinds"
