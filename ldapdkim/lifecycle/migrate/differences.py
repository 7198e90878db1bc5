"""Where an opendkim.conf setting would behave differently in ldapdkim, said line by line.

Each check here is one of the "Differences from OpenDKIM"
(docs/reference/opendkim-differences.md) that a configuration can run into;
the differential tests against OpenDKIM itself
(``tests/integration/test_opendkim_keywords.py``) pin each of them.  A
keyword with such a warning is not reported as meaning the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ldapdkim.config.datasets import DataSetEntry, read_dataset
from ldapdkim.lifecycle.migrate.opendkimconf import Setting, boolean

HOST_LISTS = ("InternalHosts", "ExternalIgnoreList", "PeerList")


def differences(conf: Mapping[str, Setting]) -> dict[str, list[str]]:
    """Keyword (lowercase) -> warnings, each naming the line (and the data-set line)."""
    found: dict[str, list[str]] = {}
    for key, check in _CHECKS.items():
        setting = conf.get(key)
        warnings = check(setting, conf)
        if warnings:
            found[key] = warnings
    return found


def _entries(setting: Setting, *, patterns: bool) -> list[DataSetEntry]:
    try:
        return read_dataset(setting.value, patterns=patterns)
    except ValueError:
        return []  # unreadable: the rest of migrate says so where it reads the value


def _macro_list(setting: Setting | None, conf: Mapping[str, Setting]) -> list[str]:
    if setting is None:
        return []
    return [
        f"{setting.where}: MacroList entry {entry.text!r}{entry.where}: OpenDKIM never "
        "matched a macro name written in braces (it adds them itself); ldapdkim does, so "
        "mail with that macro is now signed; remove the entry to keep OpenDKIM's behaviour"
        for entry in _entries(setting, patterns=False)
        if entry.text.startswith("{")
    ]


def _host_list(name: str) -> Callable[[Setting | None, Mapping[str, Setting]], list[str]]:
    def check(setting: Setting | None, conf: Mapping[str, Setting]) -> list[str]:
        if setting is None:
            return []
        entries = _entries(setting, patterns=True)
        warnings = [
            f"{setting.where}: {name} pattern {entry.text!r}{entry.where}: OpenDKIM counts "
            "the hosts it matches as excluded (its test for '!HOST' matches a leading '*'); "
            "ldapdkim includes them"
            for entry in entries
            if entry.pattern and entry.text.startswith("*")
        ]
        texts = [entry.text for entry in entries]
        names = [t for t in texts if not _is_address(t.removeprefix("!"))]
        addresses = [t for t in texts if _is_address(t.removeprefix("!"))]
        negated = any(t.startswith("!") for t in texts)
        if negated and names and addresses:
            warnings.append(
                f"{setting.where}: {name} mixes host names and addresses with an exclusion: "
                "a client excluded by its name or by its address is excluded in ldapdkim, "
                "while OpenDKIM still includes it when the other kind includes it"
            )
        return warnings

    return check


def _is_address(text: str) -> bool:
    return ":" in text or text.replace(".", "").replace("/", "").isdigit()


def notes(conf: Mapping[str, Setting]) -> list[str]:
    """Lines to add to ldapdkim.conf so that its defaults act as OpenDKIM's did."""
    mode = conf.get("mode")
    verifies = mode is None or "v" in mode.value.lower()
    if verifies and "alwaysaddarheader" not in conf:
        return [
            "OpenDKIM adds no Authentication-Results to mail without a signature "
            "(AlwaysAddARHeader no, its default); ldapdkim adds 'dkim=none' unless "
            "ldapdkim.conf says 'AlwaysAddARHeader no'"
        ]
    return []


def _on_no_signature(setting: Setting | None, conf: Mapping[str, Setting]) -> list[str]:
    always = conf.get("alwaysaddarheader")
    if setting is None or always is None or not boolean(always):
        return []
    if setting.value.lower() == "accept":
        return []
    return [
        f"{setting.where}: On-NoSignature {setting.value}: OpenDKIM ignores it while "
        f"AlwaysAddARHeader is yes ({always.where}); ldapdkim applies it"
    ]


def _maximum_signatures(setting: Setting | None, conf: Mapping[str, Setting]) -> list[str]:
    if setting is None:
        return []
    return [
        f"{setting.where}: MaximumSignaturesToVerify {setting.value}: ldapdkim checks the "
        "author domain's signatures first and leaves unchecked ones out of "
        "Authentication-Results; OpenDKIM checks them from the top and reports the rest "
        "as neutral"
    ]


_CHECKS: dict[str, Callable[[Setting | None, Mapping[str, Setting]], list[str]]] = {
    "macrolist": _macro_list,
    **{name.lower(): _host_list(name) for name in HOST_LISTS},
    "on-nosignature": _on_no_signature,
    "maximumsignaturestoverify": _maximum_signatures,
}
