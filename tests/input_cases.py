"""Input cases shared by the contacts, config and bad-input tests: a small contacts file and the
problems rows appended to it must report; the config of contracts §2 and configs it must refuse.

Not a test module: tests/test_directory.py, tests/test_policy.py and tests/test_bad_inputs.py
import it.
"""

from __future__ import annotations

# lines 2..7 of a.csv: a county with duty and A, a township A/B, a village A/B
BASE = (
    "c-duty,433122,泸溪县,county,duty,值班室,值班员,0743-4222110,\n"
    "c-c-a1,433122,泸溪县,county,A,指挥长,张三,13800000001,\n"
    "c-t-a1,433122101,浦市镇,township,A,镇长,李四,13800000002,\n"
    "c-t-b1,433122101,浦市镇,township,B,专干,王五,13800000003,\n"
    "c-v-a1,433122101201,马王溪村,village,A,防汛责任人,赵六,13800000004,13900000004\n"
    "c-v-b1,433122101201,马王溪村,village,B,灾害信息员,钱七,13800000005,\n"
)


NEXT = 8  # the line number of the first row appended after BASE


def row(
    code: str = "433122101",
    name: str = "浦市镇",
    level: str = "township",
    rank: str = "A",
    phone: str = "13800000009",
    alt: str = "",
    *,
    cid: str = "c-x",
    person: str = "孙八",
) -> str:
    """One CSV row after BASE; by default a harmless extra township A person."""
    return f"{cid},{code},{name},{level},{rank},role,{person},{phone},{alt}\n"


V2 = ("433122101202", "铁山村", "village")


V1 = ("433122101201", "马王溪村", "village")


# (row appended after BASE, expected kind, what the message must name, row kept?)
ROW_PROBLEMS = [
    (row(*V2, cid="c-v-a1"), "duplicate_id", "a.csv:6", False),
    (row(*V2, phone="1381234"), "bad_phone", "'1381234'", False),
    (row(alt="12345"), "bad_phone", "alt_phone", True),
    (row(*V1, phone="13800000005"), "duplicate_phone", "a.csv:7", True),
    (row(*V1, "B", "138-0000-0009", "13900000004"), "duplicate_phone", "a.csv:6", True),
    (row(V2[0], V2[1], "township"), "level_mismatch", "township", False),
    (row("43312210120", "铁山村", "village"), "bad_code", "'43312210120'", False),
    (row("4331A2", "某县", "county"), "bad_code", "'4331A2'", False),
    (row("433100", "湘西州", "county"), "bad_code", "市州", False),
    (row(rank="C"), "unknown_rank", "'C'", False),
    (row(level="town"), "unknown_level", "'town'", False),
    (row(person=""), "empty_name", "name", True),
    (row(phone=""), "missing_cell", "(phone)", False),
    (row(cid=""), "missing_cell", "(contact_id)", False),
    (row(name="蒲市镇"), "name_mismatch", "'浦市镇'", True),
    (row().replace(",\n", "\n"), "cell_count", "8", False),
    (row(rank="duty", phone="0743-4222111"), "duty_not_county", "township", True),
    (row(phone="0743-4222111"), "landline", "0743-4222111", True),
]


# (rows appended after BASE, expected kind, line of the division's first row)
DIVISION_PROBLEMS = [
    (row(*V2, "B"), "no_a", NEXT),
    (row("433122102201", "岩坪村", "village"), "parent_missing", NEXT),
    (row("433123101", "某镇"), "parent_missing", NEXT),
]


STRONG = "k3Yq0-Gm1XzT8vPu2rWbN5aLc7dEf9hJ"  # 32 bytes


SECTION2 = """\
timezone = "Asia/Shanghai"

[store]
url = "sqlite:///var/lib/warnd/warnd.db"

[[stages]]
level = "county"
lead = "6h"
[[stages]]
level = "township"
lead = "3h"
[[stages]]
level = "village"
lead = "1h"

[ack]
window = "5m"
attempts = 3

[escalation]
ladder = ["backup", "superior", "duty"]

[trigger]
min_severity = "Moderate"
"""


DAEMON = """
[listen]
host = "127.0.0.1"
port = 8620

[hooks]
secret_env = "WARND_TEST_HOOK_SECRET"

[[feeds]]
name = "incoming"
path = "spool/incoming"

[[feeds]]
name = "cma"
url = "https://example.invalid/cap/rss.xml"

[channels.gateway]
type = "webhook"
url = "http://127.0.0.1:9000/send"
kinds = ["voice", "sms"]
rate = "50/s"
"""


CHANNEL = '[channels.gw]\ntype = "webhook"\nurl = "http://127.0.0.1:9000/send"\n'


BAD = [
    # (toml text, dotted key the error must name)
    ('timezone = "Mars/Olympus_Mons"', "timezone"),
    ("timezone = 8", "timezone"),
    ('[store]\nurl = "mysql://db/warnd"', "store.url"),
    ('[store]\nuri = "sqlite:///x.db"', "store.uri"),
    ('[contacts]\npath = ""', "contacts.path"),
    ('[[stages]]\nlevel = "county"\nlead = "0s"', "stages[0].lead"),
    ('[[stages]]\nlevel = "county"\nlead = "6 hours"', "stages[0].lead"),
    ('[[stages]]\nlevel = "county"\nlead = -6', "stages[0].lead"),
    ('[[stages]]\nlevel = "province"\nlead = "6h"', "stages[0].level"),
    ('[[stages]]\nlevel = "county"', "stages[0]"),
    ('[[stages]]\nlevel = "county"\nlead = "6h"\nleed = "1h"', "stages[0].leed"),
    ("stages = []", "stages"),
    ("stages = 3", "stages"),
    ("ack = 3", "ack"),
    ("[ack]\nattempts = 0", "ack.attempts"),
    ("[ack]\nattempts = 21", "ack.attempts"),
    ('[ack]\nattempts = "3"', "ack.attempts"),
    ("[ack]\nattempts = true", "ack.attempts"),
    ('[ack]\nwindow = "0s"', "ack.window"),
    ('[ack]\nwindow = "5 minutes"', "ack.window"),
    ("[ack]\nattemps = 3", "ack.attemps"),
    ('[ack]\nbundle = "2 minutes"', "ack.bundle"),
    ("[ack]\nbundle = 120", "ack.bundle"),
    ('[ack]\nbundle = "5m"', "ack.bundle"),  # not shorter than the (default) window
    ('[escalation]\nladder = "backup"', "escalation.ladder"),
    ('[escalation]\nladder = ["backup", "boss"]', "escalation.ladder[1]"),
    ('[escalation]\nladder = ["duty", "duty"]', "escalation.ladder[1]"),
    ('[trigger]\nmin_severity = "Catastrophic"', "trigger.min_severity"),
    ("[listen]\nport = 70000", "listen.port"),
    ('[listen]\nport = "8620"', "listen.port"),
    ('[listen]\npublic_url = "ftp://example.invalid"', "listen.public_url"),
    ("[listen]\nmax_connections = 0", "listen.max_connections"),
    ('[listen]\nmax_connections_per_address = "64"', "listen.max_connections_per_address"),
    ('[listen]\nheader_timeout = "0s"', "listen.header_timeout"),
    ('[listen]\nbody_timeout = "slow"', "listen.body_timeout"),
    ('[listen]\ntrusted_proxies = "10.0.0.1"', "listen.trusted_proxies"),
    ('[listen]\ntrusted_proxies = ["proxy.local"]', "listen.trusted_proxies[0]"),
    ('[monitor]\nport = "8621"', "monitor.port"),
    ('[monitor]\nhost = "127.0.0.1"\nport = 8620', "monitor.port"),
    ("[monitor]\nbind = 1", "monitor.bind"),
    (
        '[[feeds]]\nname = "a"\nurl = "https://x.invalid/"\nallow_hosts = "h"',
        "feeds[0].allow_hosts",
    ),
    (
        '[[feeds]]\nname = "a"\nurl = "https://x.invalid/"\nallow_hosts = ["a b"]',
        "feeds[0].allow_hosts[0]",
    ),
    ('[[feeds]]\nname = "a"\npath = "p"\nallow_hosts = ["10.0.0.1"]', "feeds[0].allow_hosts"),
    ('[hooks]\nsecret_file = "a"\nsecret_env = "B"', "hooks"),
    ("[hooks]", "hooks"),
    ('[hooks]\nsecret_env = "not a name"', "hooks.secret_env"),
    ('[hooks]\nsecret = "hunter2"', "hooks.secret"),
    ('[hooks]\nsecret_env = "X"\nmax_age = "soon"', "hooks.max_age"),
    ('[[feeds]]\nname = "a"', "feeds[0]"),
    ('[[feeds]]\nname = "a"\npath = "p"\nurl = "https://x.invalid/"', "feeds[0]"),
    ('[[feeds]]\npath = "p"', "feeds[0].name"),
    ('[[feeds]]\nname = "a"\npath = "p"\n[[feeds]]\nname = "a"\npath = "q"', "feeds[1].name"),
    ('[[feeds]]\nname = "a"\nurl = "file:///etc/passwd"', "feeds[0].url"),
    ('[[feeds]]\nname = "a"\npath = "p"\ninterval = "0s"', "feeds[0].interval"),
    ('[[feeds]]\nname = "a"\npath = "p"\ntimeout = 30', "feeds[0].timeout"),
    ('[[feeds]]\nname = "a"\npath = "p"\nintervall = "5s"', "feeds[0].intervall"),
    ('[feeds]\nname = "a"', "feeds"),
    ("channels = 5", "channels"),
    ('[channels.gw]\nurl = "http://x.invalid/"', "channels.gw.type"),
    ('[channels.gw]\ntype = "carrier-pigeon"', "channels.gw.type"),
    (CHANNEL + 'kinds = ["fax"]', "channels.gw.kinds[0]"),
    (CHANNEL + 'kinds = ["sms", "sms"]', "channels.gw.kinds[1]"),
    (CHANNEL + "kinds = []", "channels.gw.kinds"),
    (CHANNEL + 'rate = "fast"', "channels.gw.rate"),
    (CHANNEL + 'rate = "0/s"', "channels.gw.rate"),
    (CHANNEL + 'rate = "5/0s"', "channels.gw.rate"),
    (CHANNEL + "concurrency = 0", "channels.gw.concurrency"),
    (CHANNEL + 'timeout = "forever"', "channels.gw.timeout"),
    (CHANNEL + "retries = 3", "channels.gw.retries"),
    (CHANNEL + 'token = "abc"', "channels.gw.token"),
    (CHANNEL + 'api_key = "abc"', "channels.gw.api_key"),
    (CHANNEL + 'secret_file = "a"\nsecret_env = "B"', "channels.gw"),
    ('[channels.gw]\ntype = "webhook"', "channels.gw.url"),
    ('[channels.gw]\ntype = "webhook"\nurl = "ftp://x.invalid/"', "channels.gw.url"),
    ('[channels.out]\ntype = "log"\npath = 5', "channels.out.path"),
    ('[x_local]\npassword = "hunter2"', "x_local.password"),
    ('stage = "county"', "stage"),
]
