"""``ldapdkim status``: the table, ``--json``, and the exit status from status.json."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ldapdkim import cli
from ldapdkim.cli import status as command
from ldapdkim.directory.replica import status
from ldapdkim.errors import StatusUnreadable

NOW = datetime(2026, 11, 28, 6, 0, 0, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _document(*, updated: datetime, connected: tuple[bool, ...] = (True, False)) -> dict[str, Any]:
    servers = [
        {
            "uri": f"ldap://127.0.0.1:{389 + n}",
            "connected": up,
            "last_sync": _iso(updated - timedelta(seconds=2)) if up else None,
            "entries": 3000 if up else 0,
            "staleness_s": 0.4 if up else 3600.0,
        }
        for n, up in enumerate(connected)
    ]
    return {"mode": "sync", "servers": servers, "updated": _iso(updated)}


@pytest.fixture
def state(tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    directory.mkdir()
    return directory


def _config(tmp_path: Path, state: Path) -> str:
    conf = tmp_path / "ldapdkim.conf"
    conf.write_text(f"Mode v\nStateDirectory {state}\n")
    return str(conf)


def _write(state: Path, document: dict[str, Any]) -> str:
    text = json.dumps(document, indent=2) + "\n"
    (state / "status.json").write_text(text)
    return text


# -- rendering and verdicts (fixed clock) -----------------------------------------


def test_table_shows_each_server_and_the_age_of_the_file(state: Path) -> None:
    _write(state, _document(updated=NOW - timedelta(seconds=5)))
    _, report = status.read_status(state / "status.json")
    text = command.render(report, NOW, state / "status.json")
    assert text.splitlines() == [
        f"{state}/status.json: mode sync, updated 2026-11-28T05:59:55Z (5 s ago)",
        "",
        "SERVER                STATE         LAST SYNC                       ENTRIES  STALENESS",
        "ldap://127.0.0.1:389  connected     2026-11-28T05:59:53Z (7 s ago)  3000     0.4 s",
        "ldap://127.0.0.1:390  disconnected  never                           0        3600.0 s",
        "",
        "OK: 1 of 2 directory servers connected",
    ]
    assert command.exit_status(report, NOW) == 0


def test_unknown_staleness_shows_as_a_dash(state: Path) -> None:
    document = _document(updated=NOW, connected=(True, False))
    document["servers"][1]["staleness_s"] = None
    _write(state, document)
    _, report = status.read_status(state / "status.json")
    assert report.servers[1].staleness_s is None
    row = command.render(report, NOW, state / "status.json").splitlines()[4]
    assert row.split()[-1] == "-"


def test_no_connected_server_is_a_problem(state: Path) -> None:
    _write(state, _document(updated=NOW, connected=(False, False)))
    _, report = status.read_status(state / "status.json")
    assert command.exit_status(report, NOW) == 1
    last = command.render(report, NOW, state / "status.json").splitlines()[-1]
    assert last == "PROBLEM: none of 2 directory servers is connected"


@pytest.mark.parametrize(("age", "expected"), [(0, 0), (30, 0), (31, 1), (3600, 1)])
def test_a_file_older_than_30_s_is_stale(state: Path, age: int, expected: int) -> None:
    _write(state, _document(updated=NOW - timedelta(seconds=age)))
    _, report = status.read_status(state / "status.json")
    assert command.exit_status(report, NOW) == expected
    if expected:
        last = command.render(report, NOW, state / "status.json").splitlines()[-1]
        assert last.startswith(f"PROBLEM: the status is {age} s old")
        assert last.endswith("is the milter running?")


def test_naive_times_are_utc_and_future_times_count_as_fresh(state: Path) -> None:
    document = _document(updated=NOW)
    document["updated"] = "2026-11-28T06:00:10"  # no offset, a little ahead of our clock
    _write(state, document)
    _, report = status.read_status(state / "status.json")
    assert report.updated == NOW + timedelta(seconds=10)
    assert report.age(NOW) == 0.0
    assert command.exit_status(report, NOW) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "the file does not hold a JSON object"),
        ('{"mode": "push", "servers": [], "updated": "2026-11-28T06:00:00Z"}', "mode is 'push'"),
        ('{"mode": "sync", "servers": {}, "updated": "2026-11-28T06:00:00Z"}', "not a list"),
        ('{"mode": "sync", "servers": [], "updated": "yesterday"}', "not an ISO 8601 time"),
        (
            '{"mode": "lookup", "servers": [{"uri": "ldap://a", "connected": "yes"}],'
            ' "updated": "2026-11-28T06:00:00Z"}',
            "boolean connected",
        ),
        (
            '{"mode": "lookup", "servers": [{"uri": "ldap://a", "connected": true,'
            ' "entries": "many"}], "updated": "2026-11-28T06:00:00Z"}',
            "servers[0].entries is 'many', not a number",
        ),
    ],
)
def test_a_malformed_file_is_refused_with_the_reason(
    state: Path, content: str, message: str
) -> None:
    (state / "status.json").write_text(content)
    with pytest.raises(StatusUnreadable, match=message.replace("[", r"\[")):
        status.read_status(state / "status.json")


# -- the command ------------------------------------------------------------------


def test_command_prints_the_table_and_exits_0(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(state, _document(updated=datetime.now(UTC)))
    assert cli.main(["status", "-c", _config(tmp_path, state)]) == 0
    out = capsys.readouterr().out
    assert "ldap://127.0.0.1:389  connected" in out
    assert out.endswith("OK: 1 of 2 directory servers connected\n")


def test_command_json_passes_the_file_through(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _write(state, _document(updated=datetime.now(UTC), connected=(False,)))
    assert cli.main(["status", "--json", "-c", _config(tmp_path, state)]) == 1
    assert capsys.readouterr().out == text


def test_command_exits_1_for_a_stale_file(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(state, _document(updated=datetime.now(UTC) - timedelta(minutes=5)))
    assert cli.main(["status", "-c", _config(tmp_path, state)]) == 1
    assert "PROBLEM: the status is 300 s old" in capsys.readouterr().out


def test_command_exits_2_with_a_hint_when_there_is_no_file(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "-c", _config(tmp_path, state)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"ldapdkim: {state}/status.json does not exist; is the milter running? "
        f"StateDirectory is {state} (set in the configuration file)\n"
    )


def test_command_exits_1_for_an_unreadable_file(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (state / "status.json").write_text("not json")
    assert cli.main(["status", "-c", _config(tmp_path, state)]) == 1
    assert capsys.readouterr().err.startswith(f"ldapdkim: {state}/status.json: not valid JSON")


def test_state_directory_defaults_to_var_lib(tmp_path: Path) -> None:
    from ldapdkim import config

    assert config.parse("Mode v").state_directory == Path("/var/lib/ldapdkim")
