"""Self-test of the Sendmail fixture: mail goes through a real milter to the sink.

Before end-to-end tests may trust "Sendmail ran ldapdkim and relayed the
result", the fixture must be shown to call a milter, let it change the
message, hand it the macros ldapdkim relies on (``i`` for log lines,
``{daemon_name}`` for MTA vs. submission), relay to the sink, and keep
``F=T`` (tempfail) when the milter is down.  The milter here is
``seen_milter.py``, a few lines of pymilter, not ldapdkim.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness.common import free_port
from harness.sendmail import Sendmail, SendmailError, require_sendmail, wait_for_listener

SEEN_MILTER = Path(__file__).resolve().parents[1] / "harness" / "seen_milter.py"

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: Sendmail fixture self-test\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
    b".a line that starts with a dot\r\n"
)


@pytest.fixture(autouse=True)
def _sendmail_available() -> None:
    require_sendmail()


@dataclass
class SeenMilter:
    """The running ``seen_milter.py``: its socket spec and what it recorded."""

    socket: str
    record: Path

    def entries(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]


@pytest.fixture
def seen_milter(tmp_path: Path) -> Iterator[SeenMilter]:
    port = free_port()
    record = tmp_path / "macros.jsonl"
    log_path = tmp_path / "seen_milter.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(SEEN_MILTER), str(port), str(record)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_listener(port, process, log_path, "seen_milter.py")
        yield SeenMilter(f"inet:{port}@127.0.0.1", record)
    finally:
        # SIGKILL: libmilter notices SIGTERM only when its accept loop wakes
        # up, about 5 s later, and this milter has nothing to clean up.
        process.kill()
        process.wait()


def test_milter_sees_macros_and_adds_header(tmp_path: Path, seen_milter: SeenMilter) -> None:
    with Sendmail(tmp_path / "sendmail", milter=seen_milter.socket) as mta:
        reply = mta.send(MESSAGE, mail_from="alice@example.com", rcpt_to="bob@example.org")
        assert reply.accepted, reply
        assert reply.queue_id
        delivered = mta.wait_for_message(queue_id=reply.queue_id)

        submitted = mta.send(
            MESSAGE, mail_from="alice@example.com", rcpt_to="carol@example.net",
            port=mta.submission_port,
        )  # fmt: skip
        assert submitted.accepted, submitted
        mta.wait_for_message(queue_id=submitted.queue_id)

    assert delivered.mail_from == "alice@example.com"
    assert delivered.rcpt_to == ("bob@example.org",)
    assert delivered.helo == mta.hostname
    assert delivered.header_values("X-Milter-Seen") == ["yes"]
    assert delivered.header_values("Subject") == ["Sendmail fixture self-test"]
    assert b"\r\n.a line that starts with a dot\r\n" in delivered.data

    entries = seen_milter.entries()
    assert [entry["stage"] for entry in entries] == ["envfrom", "eom", "envfrom", "eom"]
    first, second = entries[1]["macros"], entries[3]["macros"]
    assert first["i"] == reply.queue_id
    assert first["j"] == mta.hostname
    assert first["{daemon_name}"] == "MTA"
    assert first["{auth_authen}"] is None  # no SMTP AUTH in this fixture
    assert second["i"] == submitted.queue_id
    assert second["{daemon_name}"] == "MSA"
    assert entries[0]["macros"]["i"] == reply.queue_id  # already known at MAIL FROM

    log = mta.log_text()
    assert f"{reply.queue_id}: Milter (ldapdkim) add: header: X-Milter-Seen: yes" in log
    assert "stat=Sent" in log


def test_unreachable_milter_tempfails(tmp_path: Path) -> None:
    nobody = f"inet:{free_port()}@127.0.0.1"
    with Sendmail(tmp_path / "sendmail", milter=nobody, milter_flags="T") as mta:
        reply = mta.send(MESSAGE, mail_from="alice@example.com", rcpt_to="bob@example.org")
    assert (reply.code, reply.stage, reply.queue_id) == (451, "mail", None)
    assert "error connecting to filter" in mta.log_text()


def test_unreachable_milter_without_flags_is_skipped(tmp_path: Path) -> None:
    nobody = f"inet:{free_port()}@127.0.0.1"
    with Sendmail(tmp_path / "sendmail", milter=nobody, milter_flags="") as mta:
        reply = mta.send(MESSAGE, mail_from="alice@example.com", rcpt_to="root")
        assert reply.accepted, reply
        delivered = mta.wait_for_message(queue_id=reply.queue_id)
    assert delivered.rcpt_to == ("root@[127.0.0.1]",)  # local mail goes to MAIL_HUB
    assert delivered.header_values("X-Milter-Seen") == []


def test_wait_for_message_times_out_with_the_log(tmp_path: Path) -> None:
    nobody = f"inet:{free_port()}@127.0.0.1"
    with (
        Sendmail(tmp_path / "sendmail", milter=nobody) as mta,
        pytest.raises(SendmailError, match=r"no message with queue id NOSUCHID reached the sink"),
    ):
        mta.wait_for_message(queue_id="NOSUCHID", timeout=0.2)
