"""The drop-in in a configuration nobody here wrote: Debian's stock kamailio.cfg.

The stock file is read from the kamailio package and copied at test time; the
copy gets only the include and the four route calls, in code
(sipshield.edge.dropin.add_to_native_config).  The same file runs as shipped beside
it.  What is shown:
- the edit is five marked lines, and taking them out gives back the stock
  file byte for byte;
- the stock behaviour still works through the drop-in: registration into the
  in-memory location table and calls between registered users, with the same
  replies as the stock file gives on its own;
- malformed SIP, a flood and a scanner are stopped as the policy says, where
  the stock file alone lets them through;
- the replies Kamailio sends itself statelessly (with the stock file's own
  authentication on, WITH_AUTH: its 401/407 challenges, the 200 of save(),
  its 403 "Not relaying") reach brute_force and scanner, each counted once:
  password guessing and a sweep for an open relay are banned, while a user
  who mistypes a password once, registers and calls is not.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipshield.edge.dropin import MARK, add_to_native_config, remove_from_native_config
from sipshield.lab.net import free_port
from sipshield.lab.sipp import SippServer, credentials_file, run_sipp
from sipshield.lab.stack import config_dir
from tests.integration.dropin_peer import (
    answer_404,
    attack,
    bans,
    calls,
    events,
    final_status_line,
    register,
    request,
    sweep_refused_extensions,
    wait_for_ban,
)
from tests.support.stock_kamailio import StockKamailio, start, stock_text

pytestmark = pytest.mark.integration

POLICY = {
    "bans": {"base_ttl_s": 300},
    "modules": [
        {"name": "ip_controls"},
        {"name": "bans"},
        {"name": "validation"},
        {
            "name": "flood",
            "window_s": 10,
            "limits": {"invite": 20, "register": 40, "options": 20},
            "ban_after": 3,
        },
        {"name": "scanner", "max_distinct_failed_users": 10, "max_failures": 30},
        {"name": "brute_force", "max_failures_per_user": 5, "max_failures_per_source": 30},
    ],
}


@pytest.fixture(scope="module")
def shielded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockKamailio]:
    running = start(tmp_path_factory.mktemp("stock-dropin"), POLICY)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockKamailio]:
    running = start(tmp_path_factory.mktemp("stock-plain"))
    yield running
    running.stop()


# --- the edit ---------------------------------------------------------------


def test_the_edit_is_the_include_and_four_calls_and_comes_out_exactly():
    original = stock_text()
    edited = add_to_native_config(original, "/usr/share/sipshield/sipshield-dropin.cfg")
    added = [line for line in edited.splitlines() if line not in original.splitlines()]
    assert [line.strip() for line in added] == [
        f'include_file "/usr/share/sipshield/sipshield-dropin.cfg"  {MARK}',
        f"route(SIPSHIELD);  {MARK}",
        f"route(SIPSHIELD_RECORD_ROUTE);  {MARK}",
        f"route(SIPSHIELD_BRANCH);  {MARK}",
        f"route(SIPSHIELD_REPLY);  {MARK}",
    ]
    assert len(edited.splitlines()) == len(original.splitlines()) + 5
    assert remove_from_native_config(edited) == original


def test_the_running_copy_is_the_stock_file_plus_the_edit(shielded, stock):
    assert stock.config.read_text() == stock_text()
    assert remove_from_native_config(shielded.config.read_text()) == stock_text()
    assert "sipshield loaded policy" in shielded.log()


def test_the_dropin_start_leaves_nat_handling_to_the_configuration(shielded):
    # The stock file loads no nat_traversal: its NAT handling is its own
    # (WITH_NAT), and sipshield does not route here, so there is nothing to warn about.
    log = shielded.log()
    assert "sipshield loaded policy" in log
    assert "nat_traversal" not in log


# --- the stock behaviour, with and without the drop-in -----------------------


def stock_answers(kamailio: StockKamailio) -> dict[str, str | None]:
    """Status lines for what the stock configuration answers itself."""
    port = free_port()
    assert register(kamailio, "carol", port).ok
    domain = kamailio.domain
    return {
        "keepalive": final_status_line(kamailio, request(kamailio, "OPTIONS", f"sip:{domain}")),
        "unknown user": final_status_line(
            kamailio, request(kamailio, "INVITE", f"sip:nobody@{domain}")
        ),
        "foreign domain": final_status_line(
            kamailio, request(kamailio, "INVITE", "sip:bob@example.invalid")
        ),
        "no user part": final_status_line(kamailio, request(kamailio, "INVITE", f"sip:{domain}")),
        "in-dialog, no route": final_status_line(
            kamailio,
            request(kamailio, "BYE", f"sip:carol@{domain}").replace(
                f"To: <sip:carol@{domain}>".encode(), f"To: <sip:carol@{domain}>;tag=x".encode()
            ),
        ),
    }


def test_registration_and_calls_work_through_the_dropin(shielded):
    assert calls(shielded) == (3, 3)
    assert not bans(shielded)


def test_the_dropin_gives_the_same_answers_as_the_stock_file(shielded, stock):
    assert calls(stock) == (3, 3)
    with_dropin, without = stock_answers(shielded), stock_answers(stock)
    assert with_dropin == without
    assert without["keepalive"] == "SIP/2.0 200 Keepalive"
    assert without["unknown user"] == "SIP/2.0 404 Not Found"
    assert without["foreign domain"] == "SIP/2.0 403 Not relaying"


# --- what the drop-in stops --------------------------------------------------


def test_malformed_sip_is_rejected_by_sipshield_validation(shielded, stock):
    # A control character in a header value: the stock checks let it through.
    bad = request(stock, "OPTIONS", f"sip:{stock.domain}", "User-Agent: evil\x07phone\r\n")
    assert final_status_line(stock, bad) == "SIP/2.0 200 Keepalive"
    bad = request(shielded, "OPTIONS", f"sip:{shielded.domain}", "User-Agent: evil\x07phone\r\n")
    assert final_status_line(shielded, bad) is not None
    assert final_status_line(shielded, bad).startswith("SIP/2.0 400 ")
    assert any(e["module"] == "validation" and e["action"] == "reject" for e in events(shielded))


def test_invite_flood_is_banned_and_calls_go_on(shielded):
    attack(shielded, "invite_flood", "127.0.0.23", 300, 150)
    assert bans(shielded)["ip:127.0.0.23"]["module"] == "flood"
    keepalive = request(shielded, "OPTIONS", f"sip:{shielded.domain}")
    assert final_status_line(shielded, keepalive, source_ip="127.0.0.23", timeout=0.5) is None
    assert calls(shielded) == (3, 3)


def test_scanner_is_banned_at_once_where_the_stock_file_only_drops_its_probes(shielded, stock):
    for kamailio in (shielded, stock):
        attack(kamailio, "options_sweep", "127.0.0.21", 5, 10, user_agent="friendly-scanner")
    assert bans(shielded)["ip:127.0.0.21"]["module"] == "scanner"
    # Once banned, the source gets nothing more, whatever User-Agent it shows;
    # the stock file on its own recognised only the User-Agent.
    probe = request(shielded, "OPTIONS", f"sip:{shielded.domain}", "User-Agent: Zoiper\r\n")
    assert final_status_line(shielded, probe, source_ip="127.0.0.21", timeout=0.5) is None
    probe = request(stock, "OPTIONS", f"sip:{stock.domain}", "User-Agent: Zoiper\r\n")
    assert final_status_line(stock, probe, source_ip="127.0.0.21") == "SIP/2.0 200 Keepalive"


def test_replies_from_user_agents_feed_the_sweep_detection(shielded):
    """The reply call: 404s that callees answer count towards the scanner's sweep limit."""
    sweep_refused_extensions(shielded, "127.0.0.26")
    ban = wait_for_ban(shielded, "ip:127.0.0.26")
    assert ban["module"] == "scanner"
    assert "sweep" in ban["reason"]


def scan_counts(kamailio: StockKamailio, source: str, expected: int) -> tuple[int, int]:
    """(failures, distinct users) the scanner holds for ``source``, once ``expected`` arrived.

    The counting runs just after each reply is sent, so it is awaited.
    """
    client = kamailio.redis()
    failures_key, users_key = f"sipshield:scan:failures:{source}", f"sipshield:scan:users:{source}"
    deadline = time.monotonic() + 5
    while int(client.get(failures_key) or 0) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # room for a second count of the same reply, were there one
    return int(client.get(failures_key) or 0), client.scard(users_key)


def register_refusing_callees(kamailio: StockKamailio, sock: socket.socket, users: list[str]):
    here = "{}:{}".format(*sock.getsockname())
    for user in users:
        raw = request(kamailio, "REGISTER", f"sip:{kamailio.domain}",
                      f"Contact: <sip:{user}@{here}>\r\nExpires: 300\r\n")  # fmt: skip
        raw = raw.replace(b"{local}", here.encode())
        raw = raw.replace(f"To: <sip:{kamailio.domain}>".encode(),
                          f"To: <sip:{user}@{kamailio.domain}>".encode())  # fmt: skip
        sock.sendto(raw, kamailio.address)
        assert sock.recv(65535).startswith(b"SIP/2.0 200 ")


def test_each_reply_is_counted_once_whether_relayed_or_sent_by_kamailio(shielded):
    """Relayed replies pass reply_route only, Kamailio's own only event_route[sl:local-response]."""
    source = "127.0.0.27"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as refuser:
        refuser.bind(("127.0.0.1", 0))
        refuser.settimeout(2)
        register_refusing_callees(shielded, refuser, ["refuses0", "refuses1"])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as prober:
            prober.bind((source, 0))
            local = "{}:{}".format(*prober.getsockname()).encode()
            for user in ("refuses0", "refuses1"):  # the callee answers 404, Kamailio relays it
                raw = request(shielded, "INVITE", f"sip:{user}@{shielded.domain}")
                prober.sendto(raw.replace(b"{local}", local), shielded.address)
                answer_404(refuser)
    assert scan_counts(shielded, source, 2) == (2, 2)
    for number in ("900", "901", "902"):  # Kamailio answers itself, statelessly
        raw = request(shielded, "INVITE", f"sip:{number}@example.invalid")
        assert final_status_line(shielded, raw, source_ip=source) == "SIP/2.0 403 Not relaying"
    assert scan_counts(shielded, source, 5) == (5, 5)


def kamailio_check(config: Path, text: str) -> subprocess.CompletedProcess[str]:
    config.write_text(text)
    entry = f'SIPSHIELD_ENTRY="{config_dir() / "sipshield_kemi.py"}"'
    argv = ["kamailio", "-c", "-A", entry, "-f", str(config)]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_an_operator_local_response_route_keeps_kamailio_accepting_the_file(tmp_path):
    """Kamailio refuses a second block of one event_route; the edit defers to the operator's."""
    own = 'event_route[sl:local-response] {\n\txlog("L_INFO", "replied\\n");\n}\n'
    edited = add_to_native_config(stock_text() + own, str(config_dir() / "sipshield-dropin.cfg"))
    assert f"#!define SIPSHIELD_HAVE_SL_LOCAL_RESPONSE  {MARK}" in edited
    accepted = kamailio_check(tmp_path / "edited.cfg", edited)
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    # Without the define, the drop-in's own block is the second one.
    undeferred = edited.replace("#!define SIPSHIELD_HAVE_SL_LOCAL_RESPONSE", "#!define UNUSED")
    refused = kamailio_check(tmp_path / "undeferred.cfg", undeferred)
    assert refused.returncode != 0
    assert "duplicate route" in refused.stderr


# --- with authentication: the replies Kamailio sends itself ------------------

PASSWORDS = {user: f"{user}-secret" for user in ("alice", "bob", "carol", "dave", "erin")}


def switch_on_stock_auth(directory: Path) -> None:
    """Authentication the stock file's own way: WITH_AUTH in its kamailio-local.cfg.

    The stock file imports ``kamailio-local.cfg`` from its directory before
    anything else.  Its instructions pair WITH_AUTH with MySQL; a db_text
    subscriber table stands in for the database here (same auth_db module,
    same table), so the stock file itself still runs as shipped.
    """
    db = directory / "db"
    db.mkdir(parents=True)
    shutil.copy("/usr/share/kamailio/dbtext/kamailio/version", db / "version")
    rows = [f"{n}:{user}:127.0.0.1:{password}:::" for n, (user, password) in
            enumerate(PASSWORDS.items(), 1)]  # fmt: skip
    header = (
        "id(int,auto) username(string) domain(string) password(string)"
        " ha1(string,null) ha1b(string,null)"
    )
    (db / "subscriber").write_text("\n".join([header, *rows]) + "\n")
    (directory / "kamailio-local.cfg").write_text(
        f'#!define WITH_AUTH\n#!define DBURL "text://{db}"\nloadmodule "db_text.so"\n'
    )


@pytest.fixture(scope="module")
def registrar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StockKamailio]:
    directory = tmp_path_factory.mktemp("stock-auth-dropin")
    switch_on_stock_auth(directory)
    running = start(directory, POLICY)
    yield running
    running.stop()


def register_as(kamailio: StockKamailio, user: str, password: str, source: str = "127.0.0.1",
                port: int | None = None):  # fmt: skip
    return run_sipp("register", kamailio.target, service=user, auth=(user, password),
                    local_ip=source, local_port=port, keys={"domain": kamailio.domain},
                    timeout_s=5)  # fmt: skip


def test_the_registrar_lab_is_the_stock_file_with_authentication_on(registrar):
    assert remove_from_native_config(registrar.config.read_text()) == stock_text()
    unauthenticated = request(registrar, "REGISTER", f"sip:{registrar.domain}")
    assert final_status_line(registrar, unauthenticated) == "SIP/2.0 401 Unauthorized"


def test_password_guessing_is_banned_from_the_registrars_own_challenges(registrar, tmp_path):
    guesser = "127.0.0.35"
    guesses = credentials_file(
        tmp_path / "guesses.csv", [("carol", f"guess{n}") for n in range(20)]
    )
    run_sipp("register_many", registrar.target, local_ip=guesser, calls=20, rate=10,
             injection_file=guesses, timeout_s=8, keys={"domain": registrar.domain})  # fmt: skip
    ban = wait_for_ban(registrar, f"user:{guesser}:carol")
    assert ban["module"] == "brute_force"
    assert "ip:127.0.0.35" not in bans(registrar)
    assert any(
        e["module"] == "brute_force" and e["action"] == "ban" and e["user"] == "carol"
        and e["src"].startswith(f"{guesser}:") for e in events(registrar)
    )  # fmt: skip
    # carol from elsewhere still registers, and so does dave from the guesser's address.
    assert register_as(registrar, "carol", PASSWORDS["carol"]).ok
    assert register_as(registrar, "dave", PASSWORDS["dave"], source=guesser).ok


def test_a_sweep_for_an_open_relay_is_banned_from_the_registrars_own_403s(registrar):
    # Toll-fraud probing: a caller from another domain tries numbers elsewhere
    # (the stock file is not challenging it, as it relays only to local users).
    prober = "127.0.0.38"

    def probe(number: str) -> str | None:
        raw = request(registrar, "INVITE", f"sip:{number}@example.invalid").replace(
            f"<sip:alice@{registrar.domain}>".encode(), b"<sip:pbx@example.invalid>"
        )
        return final_status_line(registrar, raw, source_ip=prober)

    answers = [probe(f"0044{n:07}") for n in range(11)]
    assert answers == ["SIP/2.0 403 Not relaying"] * 11
    ban = wait_for_ban(registrar, f"ip:{prober}")
    assert ban["module"] == "scanner"
    assert "sweep" in ban["reason"]
    assert probe("00449999999") is None


def settled(kamailio: StockKamailio, key: str, value: str | None) -> str | None:
    """``key``'s value in Redis once it is ``value`` (the counting follows the reply)."""
    client = kamailio.redis()
    deadline = time.monotonic() + 5
    while client.get(key) != value and time.monotonic() < deadline:
        time.sleep(0.1)
    return client.get(key)


def test_a_mistyped_password_then_registering_and_calling_is_not_banned(registrar):
    user_ip = "127.0.0.37"
    failures = f"sipshield:authfail:user:{user_ip}:bob"
    assert not register_as(registrar, "bob", "mistyped", source=user_ip).ok
    assert settled(registrar, failures, "1") == "1"  # the challenge to no credentials is not one
    callee_port = free_port(user_ip)
    assert register_as(registrar, "bob", PASSWORDS["bob"], source=user_ip, port=callee_port).ok
    # The registrar's 200 (sent by save()) is a success: bob's failure count is gone.
    assert settled(registrar, failures, None) is None
    callee = SippServer("call_uas", local_ip=user_ip, local_port=callee_port, calls=3,
                        keys={"domain": registrar.domain})  # fmt: skip
    caller = run_sipp("call_uac", registrar.target, service="bob", calls=3, rate=5, talk_ms=100,
                      auth=("alice", PASSWORDS["alice"]),
                      keys={"domain": registrar.domain, "caller": "alice"})  # fmt: skip
    answered = callee.finish()
    assert caller.ok, caller.explain()
    assert answered.successful == 3
    assert not {user_ip, "127.0.0.1"} & {scope.split(":")[1] for scope in bans(registrar)}
