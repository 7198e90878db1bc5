"""The configuration.

The keyword table, its value converters, host lists and data sets.
"""

from ldapdkim.config.settings import Settings, keyword_reference, load, parse

__all__ = ["Settings", "keyword_reference", "load", "parse"]
