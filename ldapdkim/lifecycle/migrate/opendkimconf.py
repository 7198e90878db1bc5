"""Read an ``opendkim.conf`` as OpenDKIM does: keyword, value, ``Include`` files read in place.

The line syntax is the one ldapdkim's own configuration shares
(:func:`ldapdkim.config.datasets.keyword_lines`); a keyword given twice keeps
its last value.  Nothing is validated here: migrate reads each setting it
uses, and tells which others carry over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ldapdkim.config.datasets import (
    keyword_lines,
)
from ldapdkim.errors import (
    ConfigError,
)


@dataclass(frozen=True)
class Setting:
    spelled: str
    value: str
    source: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def read_conf(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Setting]:
    """Keyword (lowercase) -> its last setting, with ``Include`` files read in place.

    A relative ``Include`` is taken from the including file's directory (OpenDKIM
    takes it from its working directory, which migrate cannot know).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: OpenDKIM configuration not found; give the file opendkim runs with "
            "(often /etc/opendkim.conf)"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot be read ({reason}); check the path") from None
    settings: dict[str, Setting] = {}
    for number, name, value in keyword_lines(text):
        setting = Setting(name, value, path, number)
        if name.lower() == "include":
            included = Path(setting.value)
            if not included.is_absolute():
                included = path.parent / included
            if included in (path, *seen):
                raise ConfigError(f"{setting.where}: Include {setting.value} includes itself")
            settings.update(read_conf(included, (*seen, path)))
            continue
        settings[name.lower()] = setting
    return settings


def boolean(setting: Setting | None) -> bool:
    """OpenDKIM's reading of a Boolean: true when it starts with t, y or 1."""
    return setting is not None and setting.value[:1].lower() in ("t", "y", "1")
