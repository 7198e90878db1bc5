"""The Sync State Control read without pyasn1 gives what python-ldap's decoder gives."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ldap.syncrepl import SyncStateControl as Pyasn1Control
from ldap.syncrepl import SyncStateValue
from pyasn1.codec.ber import encoder

from ldapdkim.directory.replica.syncstate import (
    RESPONSE_CONTROLS,
    SyncStateControl,
    parse_sync_state,
)


def encoded(state: int, entry_uuid: bytes, cookie: bytes | None) -> bytes:
    value = SyncStateValue()
    value.setComponentByName("state", state)
    value.setComponentByName("entryUUID", entry_uuid)
    if cookie is not None:
        value.setComponentByName("cookie", cookie)
    return bytes(encoder.encode(value))


def decoded(control_class: type, value: bytes) -> tuple[str, str, str | None]:
    control = control_class()
    control.decodeControlValue(value)
    return control.state, control.entryUUID, control.cookie


@given(
    state=st.integers(0, 3),
    entry_uuid=st.binary(min_size=16, max_size=16),
    cookie=st.none() | st.binary(max_size=300),
)
def test_every_plain_encoding_reads_as_pyasn1_reads_it(
    state: int, entry_uuid: bytes, cookie: bytes | None
) -> None:
    value = encoded(state, entry_uuid, cookie)
    assert parse_sync_state(value) == decoded(Pyasn1Control, value)


def test_a_slapd_style_value_reads_as_expected() -> None:
    entry_uuid = uuid.UUID("5f8d3a4e-1c2b-4d6e-9f00-112233445566")
    cookie = b"rid=000,csn=20261204044512.123456Z#000000#000#000000"
    value = encoded(1, entry_uuid.bytes, cookie)
    assert parse_sync_state(value) == ("add", str(entry_uuid), cookie.decode())
    assert value[1] & 0x80 == 0  # short form here; the long form is in the property test


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x30",
        b"\x30\x80\x0a\x01\x01\x04\x10" + bytes(16) + b"\x00\x00",  # indefinite length
        b"\x30\x15\x0a\x01\x04\x04\x10" + bytes(16),  # state 4
        b"\x30\x14\x0a\x01\x01\x04\x0f" + bytes(15),  # a 15-byte UUID
        b"\x30\x15\x0a\x01\x01\x04\x10" + bytes(16) + b"\x00",  # something after the sequence
        b"\x30\x17\x0a\x01\x01\x04\x10" + bytes(16) + b"\x02\x00",  # an INTEGER as cookie
        b"\x31\x15\x0a\x01\x01\x04\x10" + bytes(16),  # a SET
    ],
)
def test_anything_but_the_plain_encoding_is_left_to_pyasn1(value: bytes) -> None:
    with pytest.raises(ValueError, match="plain encoding"):
        parse_sync_state(value)
    try:
        expected = decoded(Pyasn1Control, value)
    except Exception as err:  # pyasn1 refuses it: so does the control
        with pytest.raises(type(err)):
            decoded(SyncStateControl, value)
    else:
        assert decoded(SyncStateControl, value) == expected


def test_the_consumer_gets_our_control_and_python_ldaps_for_the_rest() -> None:
    assert RESPONSE_CONTROLS[SyncStateControl.controlType] is SyncStateControl
    assert SyncStateControl.__name__ == Pyasn1Control.__name__  # the consumer matches on it
    sync_done = "1.3.6.1.4.1.4203.1.9.1.3"
    assert RESPONSE_CONTROLS[sync_done].__name__ == "SyncDoneControl"
    with pytest.raises(KeyError):
        RESPONSE_CONTROLS["1.2.3.4.5"]
