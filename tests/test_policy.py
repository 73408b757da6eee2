"""warnd.config.policy: the config file of contracts §2/§7 is validated once, every mistake
named."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from input_cases import BAD, DAEMON, SECTION2, STRONG

from warnd.config.exposure import EXAMPLE_SECRET, MIN_SECRET_BYTES
from warnd.config.policy import (
    AckPolicy,
    Config,
    HooksConfig,
    Policy,
    RateLimit,
    StagePolicy,
    find_config,
    load_config,
    parse_rate,
)
from warnd.core.errors import ConfigError
from warnd.edges import logs

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "warnd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return info.value


def test_bundled_config_loads_with_631_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the bundled file's relative paths are relative to the repo root
    config = load_config("config/warnd.toml")
    # the 631 timetable and ladder of the defaults; the answer window that passes the audit
    # (2m × 3, docs/config.md) instead of the specification's 5m
    default = Policy.default()
    assert config.policy == replace(default, ack=replace(default.ack, window=timedelta(minutes=2)))
    assert config.store_url == "sqlite:///var/warnd.db"
    assert config.contacts_path == Path("contacts")
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 8620)
    assert config.listen.public_url == "http://127.0.0.1:8620"
    assert [f.name for f in config.feeds] == ["incoming"]
    assert config.feeds[0].path == Path("var/spool/incoming")
    assert config.feeds[0].interval == timedelta(seconds=5)
    outbox = config.channels["outbox"]
    assert (outbox.type, outbox.kinds) == ("log", ("voice", "sms"))
    assert outbox.options["path"] == "var/outbox.jsonl"
    assert (config.monitor.host, config.monitor.port) == ("127.0.0.1", 8621)
    # the bundled secret is the public example: refused, except in demo mode (the quick start)
    with pytest.raises(ConfigError, match=r"hooks\.secret_file: .*示例密钥.*--demo"):
        config.require_daemon()
    demo = dataclasses.replace(config, demo=True)
    demo.require_daemon()
    assert demo.hooks is not None and demo.hooks.secret(demo=True) == EXAMPLE_SECRET
    assert (REPO / "config/hook-secret.example").read_bytes().strip() == EXAMPLE_SECRET


def test_default_policy_is_631() -> None:
    policy = Policy.default()
    assert [(s.level, s.lead) for s in policy.stages] == [
        ("county", timedelta(hours=6)),
        ("township", timedelta(hours=3)),
        ("village", timedelta(hours=1)),
    ]
    assert policy.ack == AckPolicy(timedelta(minutes=5), 3)
    assert policy.ladder == ("backup", "superior", "duty")
    assert policy.min_severity == "Moderate"


def test_section2_alone_loads_and_serve_names_what_is_missing(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SECTION2))
    assert config.policy == Policy.default()
    assert (config.feeds, dict(config.channels), config.hooks) == ((), {}, None)
    with pytest.raises(ConfigError) as info:
        config.require_daemon()
    message = str(info.value)
    assert "[[feeds]]" in message and "[channels." in message and "[hooks]" in message


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.policy == Policy.default()
    assert config.timezone == "Asia/Shanghai" and config.tz.key == "Asia/Shanghai"
    assert config.store_url == "sqlite:///var/lib/warnd/warnd.db"
    assert config.contacts_path is None


def test_daemon_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, SECTION2 + DAEMON))
    incoming, cma = config.feeds
    assert (incoming.path, incoming.url, incoming.interval) == (
        Path("spool/incoming"),
        None,
        timedelta(seconds=10),
    )
    assert (cma.path, cma.url, cma.interval) == (
        None,
        "https://example.invalid/cap/rss.xml",
        timedelta(seconds=60),
    )
    assert cma.timeout == timedelta(seconds=30)
    gateway = config.channels["gateway"]
    assert gateway.rate == RateLimit(50, timedelta(seconds=1))
    assert gateway.concurrency == 10
    assert dict(gateway.options) == {"url": "http://127.0.0.1:9000/send"}
    monkeypatch.delenv("WARND_TEST_HOOK_SECRET", raising=False)
    with pytest.raises(ConfigError, match=r"hooks\.secret_env"):
        config.require_daemon()
    monkeypatch.setenv("WARND_TEST_HOOK_SECRET", f" {STRONG}\n")
    config.require_daemon()
    assert config.hooks is not None and config.hooks.secret() == STRONG.encode()


def test_hooks_secret_file_read_lazily(tmp_path: Path) -> None:
    secret = tmp_path / "hook-secret"
    text = SECTION2 + f'[hooks]\nsecret_file = "{secret}"\n'
    config = load_config(write(tmp_path, text))  # loads although the file does not exist yet
    assert config.hooks == HooksConfig(secret_file=secret)
    with pytest.raises(ConfigError, match=r"hooks\.secret_file"):
        config.hooks.secret()
    secret.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        config.hooks.secret()
    secret.write_text(STRONG + "\n")
    assert config.hooks.secret() == STRONG.encode()


def test_stage_order_kept_and_severity_case_normalised(tmp_path: Path) -> None:
    text = """
[[stages]]
level = "township"
lead = "90m"
[[stages]]
level = "village"
lead = "60s"
[trigger]
min_severity = "severe"
[escalation]
ladder = ["duty"]
"""
    policy = load_config(write(tmp_path, text)).policy
    assert policy.stages == (
        StagePolicy("township", timedelta(minutes=90)),
        StagePolicy("village", timedelta(seconds=60)),
    )
    assert policy.min_severity == "Severe"
    assert policy.ladder == ("duty",)


def test_channel_order_kept_and_x_tables_ignored(tmp_path: Path) -> None:
    text = """
[x_local]
anything = [1, 2]
[channels.zeta]
type = "log"
kinds = ["sms"]
x_note = "local"
[channels.alpha]
type = "log"
kinds = ["voice", "sms"]
"""
    config = load_config(write(tmp_path, text))
    assert list(config.channels) == ["zeta", "alpha"]
    assert [c.name for c in config.channels_for("sms")] == ["zeta", "alpha"]
    assert [c.name for c in config.channels_for("voice")] == ["alpha"]


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("50/s", RateLimit(50, timedelta(seconds=1))),
        ("600/m", RateLimit(600, timedelta(minutes=1))),
        ("10/min", RateLimit(10, timedelta(minutes=1))),
        ("100 / 10s", RateLimit(100, timedelta(seconds=10))),
        ("3600/hour", RateLimit(3600, timedelta(hours=1))),
    ],
)
def test_parse_rate(text: str, rate: RateLimit) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize(("text", "key"), BAD, ids=[k for _, k in BAD])
def test_bad_value_names_the_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    error = config_error(tmp_path, text + "\n")
    assert error.field == key
    assert f": {key}: " in str(error)


def test_error_names_line_and_value(tmp_path: Path) -> None:
    text = SECTION2.replace('lead = "1h"', 'lead = "1 hour"')
    error = config_error(tmp_path, text)
    assert error.field == "stages[2].lead"
    assert error.line == text.splitlines().index('lead = "1 hour"') + 1
    assert "'1 hour'" in str(error)
    text = SECTION2 + DAEMON.replace('rate = "50/s"', 'rate = "50/fortnight"')
    error = config_error(tmp_path, text)
    assert error.line == text.splitlines().index('rate = "50/fortnight"') + 1
    assert str(error).endswith("(got '50/fortnight')")


def test_duplicate_stage_level(tmp_path: Path) -> None:
    text = SECTION2.replace('level = "village"', 'level = "county"')
    error = config_error(tmp_path, text)
    assert error.field == "stages[2].level"
    assert "twice" in str(error)


def test_unknown_key_suggests_the_known_one(tmp_path: Path) -> None:
    error = config_error(tmp_path, "[ack]\nwindow = '5m'\nattemps = 3\n")
    assert "unknown key" in str(error) and "'attempts'" in str(error)
    assert error.line == 3


def test_secret_literal_refused_with_the_remedy(tmp_path: Path) -> None:
    error = config_error(tmp_path, SECTION2 + '[hooks]\nsecret = "hunter2"\n')
    assert "secret_file" in str(error) and "secret_env" in str(error)
    assert "hunter2" not in str(error)  # the secret itself is not echoed into logs


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    error = config_error(tmp_path, 'timezone = "Asia/Shanghai"\n[ack\nwindow = "5m"\n')
    assert error.line == 2
    assert "TOML" in str(error)


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_config(missing)
    latin = tmp_path / "latin.toml"
    latin.write_bytes('timezone = "Asia/Shanghai" # \xe9\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(latin)
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + SECTION2.encode())
    assert load_config(bom).policy == Policy.default()


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write(tmp_path, SECTION2)
    assert find_config(str(explicit)) == explicit
    with pytest.raises(ConfigError, match=r"elsewhere\.toml"):
        find_config(str(tmp_path / "elsewhere.toml"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "warnd.toml").write_text(SECTION2)
    assert find_config(None) == Path("config/warnd.toml")
    system = tmp_path / "etc" / "warnd.toml"
    local = Path("missing/warnd.toml")
    with pytest.raises(ConfigError) as info:
        find_config(None, candidates=(local, system))
    assert str(local) in str(info.value) and str(system) in str(info.value)
    system.parent.mkdir()
    system.write_text(SECTION2)
    assert find_config(None, candidates=(local, system)) == system


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SECTION2 + DAEMON))
    assert isinstance(config, Config)
    with pytest.raises(AttributeError):
        config.store_url = "sqlite:///other.db"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.channels["new"] = config.channels["gateway"]  # type: ignore[index]


def test_a_heartbeat_whose_two_beats_outlast_the_window_is_refused(tmp_path: Path) -> None:
    """PostgreSQL instances heartbeat; a dead one's messages are queued again after two silent
    beats, which must come before its calls' next attempts (docs/config.md)."""
    err = config_error(tmp_path, '[store]\nheartbeat = "31s"\n[ack]\nwindow = "60s"\n')
    assert err.field == "store.heartbeat" and "ack.window" in str(err)
    ok = load_config(write(tmp_path, '[store]\nheartbeat = "30s"\n[ack]\nwindow = "60s"\n'))
    assert ok.store_heartbeat == timedelta(seconds=30)
    assert load_config(write(tmp_path, "")).store_heartbeat is None  # derived from the window


def test_bundle_is_off_by_default_and_shorter_than_the_window(tmp_path: Path) -> None:
    """``[ack] bundle`` (contracts §8): "0s" is off, the default; a span must be shorter than
    the window (a bundled attempt would otherwise pass its own next one)."""
    assert load_config(write(tmp_path, "")).policy.ack.bundle == timedelta(0)
    off = load_config(write(tmp_path, '[ack]\nbundle = "0s"\n'))
    assert off.policy.ack.bundle == timedelta(0)
    on = load_config(write(tmp_path, '[ack]\nwindow = "5m"\nbundle = "2m"\n'))
    assert on.policy.ack.bundle == timedelta(minutes=2)
    err = config_error(tmp_path, '[ack]\nwindow = "60s"\nbundle = "1m"\n')
    assert err.field == "ack.bundle" and "ack.window" in str(err)


# ---- the edges: secrets, demo mode, listener limits, the monitor listener, feed allow-lists -----


def test_hook_secrets_shorter_than_32_bytes_are_refused_and_every_secret_is_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(write(tmp_path, SECTION2 + DAEMON))
    assert config.hooks is not None and MIN_SECRET_BYTES == 32
    for short in ("abc", "x" * 31, " " + "y" * 31 + "\n"):
        monkeypatch.setenv("WARND_TEST_HOOK_SECRET", short)
        with pytest.raises(ConfigError, match=r"hooks\.secret_env: 密钥太短 .* at least 32") as e:
            config.require_daemon()
        assert short.strip() not in str(e.value)  # the error names the variable, not the value
        # read, refused, and still masked wherever it would appear in a log line
        assert short.strip() not in logs.scrub(f"token={short.strip()}; ")
    monkeypatch.setenv("WARND_TEST_HOOK_SECRET", "z" * 32)
    config.require_daemon()
    assert logs.scrub("the secret is " + "z" * 32) == "the secret is zz…(32)"


def test_the_example_secret_is_refused_outside_demo_mode_and_demo_mode_is_loopback_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copied = tmp_path / "hook-secret"  # copied to /etc by someone: the content counts
    copied.write_bytes((REPO / "config/hook-secret.example").read_bytes())
    text = SECTION2 + DAEMON.replace(
        'secret_env = "WARND_TEST_HOOK_SECRET"', f'secret_file = "{copied}"'
    )
    config = load_config(write(tmp_path, text))
    with pytest.raises(ConfigError, match="示例密钥"):
        config.require_daemon()
    dataclasses.replace(config, demo=True).require_daemon()
    exposed = load_config(write(tmp_path, text.replace('host = "127.0.0.1"', 'host = "0.0.0.0"')))
    with pytest.raises(ConfigError, match=r"listen\.host: 演示模式只监听本机"):
        dataclasses.replace(exposed, demo=True).require_daemon()
    # demo mode never comes from the file
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(write(tmp_path, text + "demo = true\n"))


def test_listener_limits_and_the_monitor_listener(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SECTION2 + DAEMON))
    listen = config.listen
    assert (listen.max_connections, listen.max_connections_per_address) == (1024, 64)
    assert (listen.header_timeout, listen.body_timeout) == (timedelta(seconds=10),) * 2
    assert listen.trusted_proxies == ()
    assert (config.monitor.host, config.monitor.port) == ("127.0.0.1", 8621)  # listen.port + 1
    text = SECTION2 + DAEMON.replace(
        "port = 8620",
        'port = 0\nmax_connections = 200\nmax_connections_per_address = 8\nheader_timeout = "3s"'
        '\nbody_timeout = "5s"\ntrusted_proxies = ["10.0.0.5", "::1"]',
    )
    config = load_config(write(tmp_path, text))
    listen = config.listen
    assert (listen.max_connections, listen.max_connections_per_address) == (200, 8)
    assert (listen.header_timeout, listen.body_timeout) == (
        timedelta(seconds=3),
        timedelta(seconds=5),
    )
    assert listen.trusted_proxies == ("10.0.0.5", "::1")
    assert config.monitor.port == 0  # the listener on any free port: the monitor too
    config = load_config(write(tmp_path, text + '[monitor]\nhost = "10.0.0.9"\nport = 9100\n'))
    assert (config.monitor.host, config.monitor.port) == ("10.0.0.9", 9100)


def test_feed_allow_hosts(tmp_path: Path) -> None:
    text = (
        SECTION2
        + '[[feeds]]\nname = "a"\nurl = "http://10.0.0.1/cap.xml"\n'
        + 'allow_hosts = ["10.0.0.2", "192.168.0.0/16", "cap-mirror.local", "fd00::1"]\n'
    )
    (feed,) = load_config(write(tmp_path, text)).feeds
    assert feed.allow_hosts == ("10.0.0.2", "192.168.0.0/16", "cap-mirror.local", "fd00::1")
