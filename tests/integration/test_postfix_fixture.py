"""The throw-away Postfix of :mod:`postfix` works: mail goes in over SMTP and out to the sink.

Also shows the parts later milter tests rely on: the client address a
milter sees (127.0.0.2 is outside the milter's internal hosts), the
``{daemon_name}`` macro of the submission port, ``milter_default_action``
when the milter is down, and the queue (deferred mail, reload, flush).
The milter here is a trivial pymilter one in a child process: libmilter runs
once per process and takes over signal handling, so it cannot share pytest's.
"""

from __future__ import annotations

import json
import smtplib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.common import accepts, free_port, start_and_wait
from harness.postfix import HOSTNAME, Postfix, PostfixError, crlf, header_values, require_postfix

MILTER_SCRIPT = '''\
"""A trivial milter: adds X-Milter-Seen and records the macros it saw, one JSON per line."""
import json
import os
import sys

import Milter

SPEC, RECORD = sys.argv[1], sys.argv[2]


class Seen(Milter.Base):
    def eom(self):
        self.addheader("X-Milter-Seen", "yes")
        seen = {
            name: self.getsymval(macro)
            for name, macro in [
                ("daemon_name", "{daemon_name}"),
                ("queue_id", "i"),
                ("auth_authen", "{auth_authen}"),
            ]
        }
        with open(RECORD, "a") as record:
            record.write(json.dumps(seen) + "\\n")
        return Milter.ACCEPT


os.umask(0)  # a Unix socket must be writable by user postfix
Milter.factory = Seen
Milter.set_flags(Milter.ADDHDRS)
Milter.runmilter("seen", SPEC, 60)
'''

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: fixture check\r\n"
    b"Message-ID: <fixture-1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob,  \r\n"
    b".a line that starts with a dot\r\n"
    b"..and one with two\r\n"
    b"caf\xc3\xa9 \t\r\n"
    b"\r\n"
)


def message(subject: str) -> bytes:
    """MESSAGE with its Subject (and Message-ID) made unique to one test."""
    return MESSAGE.replace(b"fixture check", subject.encode()).replace(
        b"fixture-1", subject.replace(" ", "-").encode()
    )


class TrivialMilter:
    """MILTER_SCRIPT running as a child process on *spec* (pymilter's notation)."""

    def __init__(self, workdir: Path, spec: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        script = workdir / "trivial_milter.py"
        script.write_text(MILTER_SCRIPT)
        self.record = workdir / "seen.jsonl"
        self.log = workdir / "milter.log"
        self.spec = spec
        self.process = start_and_wait(
            [sys.executable, str(script), spec, str(self.record)],
            name="the seen milter",
            until=f"listening on {spec}",
            ready=lambda: accepts(spec),
            timeout=10.0,
            log_path=self.log,
        )

    def seen(self) -> list[dict[str, Any]]:
        """What the milter recorded at each end of message."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def stop(self) -> None:
        # SIGKILL: after SIGTERM libmilter takes some 5 s to notice, and this
        # milter has nothing to save.
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postfix]:
    """A Postfix without milter, shared by this module's plain tests."""
    require_postfix()
    with Postfix(tmp_path_factory.mktemp("postfix")) as server:
        yield server
        assert server.log_problems() == []
        assert server.sink.errors == []


@pytest.fixture(scope="module")
def milter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrivialMilter]:
    require_postfix()
    trivial = TrivialMilter(tmp_path_factory.mktemp("milter"), f"inet:{free_port()}@127.0.0.1")
    yield trivial
    trivial.stop()


@pytest.fixture(scope="module")
def milter_postfix(
    tmp_path_factory: pytest.TempPathFactory, milter: TrivialMilter
) -> Iterator[Postfix]:
    port = milter.spec.split(":")[1].split("@")[0]
    with Postfix(
        tmp_path_factory.mktemp("postfix"),
        milter=f"inet:127.0.0.1:{port}",
        sasl_users={"alice": "wonderland"},
    ) as server:
        yield server
        # The wrong-password test makes the one warning expected here.
        problems = server.log_problems()
        assert [line for line in problems if "authentication failed" not in line] == []


def test_a_message_arrives_as_sent_below_a_received_field(postfix: Postfix) -> None:
    sent = message("arrives as sent")
    reply = postfix.send(sent, mail_from="alice@example.com", rcpt_to=["bob@example.net"])
    assert reply.accepted, reply
    assert reply.queue_id

    delivered = postfix.wait_for_message("arrives as sent")

    # Postfix puts one folded Received field on top; the rest is the message as sent.
    assert delivered.endswith(sent)
    added = delivered[: -len(sent)]
    assert added.startswith(b"Received: from client.example.test (unknown [127.0.0.1])\r\n")
    assert all(line.startswith(b"\t") for line in added.split(b"\r\n")[1:-1])
    (received,) = header_values(delivered, "Received")
    assert f"by {HOSTNAME} (Postfix) with ESMTP id {reply.queue_id}" in received
    (envelope,) = [m for m in postfix.sink.messages if m.data == delivered]
    assert (envelope.mail_from, envelope.rcpt_to) == ("alice@example.com", ("bob@example.net",))


def test_bare_newlines_are_sent_as_crlf(postfix: Postfix) -> None:
    sent = message("bare newlines").replace(b"\r\n", b"\n")
    assert postfix.send(sent, mail_from="a@example.com", rcpt_to=["b@example.net"]).accepted

    assert postfix.wait_for_message("bare newlines").endswith(crlf(sent))


def test_postfix_sees_the_client_address_the_client_bound(postfix: Postfix) -> None:
    reply = postfix.send(
        message("from 127.0.0.2"),
        mail_from="alice@example.com",
        rcpt_to=["bob@example.net"],
        source_address="127.0.0.2",
    )
    assert reply.accepted, reply

    (received,) = header_values(postfix.wait_for_message("from 127.0.0.2"), "Received")
    assert received.startswith("from client.example.test (unknown [127.0.0.2])")
    assert "client=unknown[127.0.0.2]" in postfix.log_text()


def test_smtp_port_mail_passes_the_milter(milter_postfix: Postfix, milter: TrivialMilter) -> None:
    reply = milter_postfix.send(
        message("through the milter"), mail_from="alice@example.com", rcpt_to=["b@example.net"]
    )
    assert reply.accepted, reply

    delivered = milter_postfix.wait_for_message("through the milter")
    assert header_values(delivered, "X-Milter-Seen") == ["yes"]
    assert {"daemon_name": HOSTNAME, "queue_id": reply.queue_id, "auth_authen": None} in (
        milter.seen()
    )


def test_submission_port_tells_the_milter_originating(
    milter_postfix: Postfix, milter: TrivialMilter
) -> None:
    reply = milter_postfix.send(
        message("submitted"),
        mail_from="alice@example.com",
        rcpt_to=["bob@example.net"],
        port=milter_postfix.submission_port,
    )
    assert reply.accepted, reply

    delivered = milter_postfix.wait_for_message("submitted")
    assert header_values(delivered, "X-Milter-Seen") == ["yes"]
    assert {"daemon_name": "ORIGINATING", "queue_id": reply.queue_id, "auth_authen": None} in (
        milter.seen()
    )


def test_an_authenticated_client_is_named_to_the_milter(
    milter_postfix: Postfix, milter: TrivialMilter
) -> None:
    reply = milter_postfix.send(
        message("authenticated"),
        mail_from="alice@example.com",
        rcpt_to=["bob@example.net"],
        port=milter_postfix.submission_port,
        source_address="127.0.0.2",
        auth=("alice", "wonderland"),
    )
    assert reply.accepted, reply

    delivered = milter_postfix.wait_for_message("authenticated")
    assert "Authenticated sender" not in delivered.decode()  # smtpd_sasl_authenticated_header
    assert {"daemon_name": "ORIGINATING", "queue_id": reply.queue_id, "auth_authen": "alice"} in (
        milter.seen()
    )
    assert milter_postfix.sasl is not None
    assert ("alice", True) in milter_postfix.sasl.attempts


def test_a_wrong_password_is_refused_at_auth(milter_postfix: Postfix) -> None:
    reply = milter_postfix.send(
        message("wrong password"),
        mail_from="alice@example.com",
        rcpt_to=["bob@example.net"],
        port=milter_postfix.submission_port,
        auth=("alice", "looking-glass"),
    )

    assert (reply.code, reply.stage) == (535, "auth"), reply
    assert milter_postfix.sasl is not None
    assert ("alice", False) in milter_postfix.sasl.attempts


@pytest.mark.parametrize("initial_response", [True, False])
def test_auth_login_works_too(milter_postfix: Postfix, initial_response: bool) -> None:
    with smtplib.SMTP("127.0.0.1", milter_postfix.submission_port, "c.example.test") as client:
        client.ehlo()
        client.user, client.password = "alice", "wonderland"
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=initial_response)

    assert code == 235


def test_without_sasl_users_there_is_no_auth(postfix: Postfix) -> None:
    reply = postfix.send(
        message("no auth"), mail_from="a@x.com", rcpt_to=["b@x.net"], auth=("alice", "x")
    )

    assert (reply.code, reply.stage) == (0, "auth"), reply
    assert "AUTH extension not supported" in reply.text


def test_local_submission_passes_the_non_smtpd_milter(
    milter_postfix: Postfix, milter: TrivialMilter
) -> None:
    milter_postfix.submit_local(
        message("sendmail command"), mail_from="alice@example.com", rcpt_to=["bob@example.net"]
    )

    delivered = milter_postfix.wait_for_message("sendmail command")
    assert header_values(delivered, "X-Milter-Seen") == ["yes"]
    assert "(Postfix, from userid 0)" in header_values(delivered, "Received")[0]


@pytest.mark.parametrize("action", ["tempfail", "accept"])
def test_milter_default_action_applies_when_the_milter_is_down(tmp_path: Path, action: str) -> None:
    require_postfix()
    nobody_listens = f"inet:127.0.0.1:{free_port()}"
    with Postfix(tmp_path, milter=nobody_listens, milter_default_action=action) as server:
        reply = server.send(
            message(f"milter down {action}"), mail_from="a@example.com", rcpt_to=["b@example.net"]
        )
        if action == "tempfail":
            assert reply.temporary, reply
            assert (reply.code, reply.stage) == (451, "mail"), reply
            assert "4.7.1" in reply.text, reply
            assert server.delivered == []
        else:
            assert reply.accepted, reply
            delivered = server.wait_for_message(f"milter down {action}")
            assert header_values(delivered, "X-Milter-Seen") == []
        assert "Connection refused" in server.log_text()


def test_deferred_mail_is_delivered_after_reload_and_flush(tmp_path: Path) -> None:
    require_postfix()
    with Postfix(tmp_path) as server:
        sink = server.main_cf["relayhost"]
        server.main_cf["relayhost"] = f"[127.0.0.1]:{free_port()}"  # nobody there
        server.reload()
        reply = server.send(message("deferred"), mail_from="a@example.com", rcpt_to=["b@x.net"])
        assert reply.accepted and reply.queue_id, reply
        deadline = time.monotonic() + 10
        while "status=deferred" not in server.log_text():
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.02)
        assert server.queue_ids() == [reply.queue_id]
        assert reply.queue_id in server.mailq()

        server.main_cf["relayhost"] = sink
        server.reload()
        server.flush()

        assert b"deferred" in server.wait_for_message("deferred")
        deadline = time.monotonic() + 10
        while server.queue_ids():
            assert time.monotonic() < deadline, server.mailq()
            time.sleep(0.02)


def test_two_instances_run_side_by_side(tmp_path: Path, postfix: Postfix) -> None:
    with Postfix(tmp_path) as other:
        assert {other.smtp_port, other.submission_port, other.sink.port}.isdisjoint(
            {postfix.smtp_port, postfix.submission_port, postfix.sink.port}
        )
        assert other.master_pid != postfix.master_pid
        reply = other.send(message("the other one"), mail_from="a@x.com", rcpt_to=["b@x.net"])
        assert reply.accepted, reply
        other.wait_for_message("the other one")
    assert not other.running
    assert postfix.running
    assert all(b"the other one" not in data for data in postfix.delivered)


def test_a_restart_keeps_ports_and_is_quick(tmp_path: Path) -> None:
    require_postfix()
    with Postfix(tmp_path) as server:
        ports = (server.smtp_port, server.submission_port)
        server.restart()
        assert (server.smtp_port, server.submission_port) == ports
        assert server.send(message("restarted"), mail_from="a@x.com", rcpt_to=["b@x.net"]).accepted
        server.wait_for_message("restarted")
        assert server.last_start_seconds is not None and server.last_start_seconds < 5
        assert server.last_stop_seconds is not None and server.last_stop_seconds < 5


def test_waiting_in_vain_says_what_arrived_and_shows_the_log(postfix: Postfix) -> None:
    postfix.send(message("something else"), mail_from="a@x.com", rcpt_to=["b@x.net"])
    postfix.wait_for_message("something else")

    with pytest.raises(PostfixError) as raised:
        postfix.wait_for_message("never sent", timeout=0.1)

    text = str(raised.value)
    assert "'never sent'" in text
    assert "Subject 'something else'" in text
    assert "status=sent" in text  # the log tail
