"""The configuration: the keyword table and ``Settings``, value converters, data sets,
host lists and the LDAP connection value.
"""

from ldapdkim.config.keywords import keyword_reference
from ldapdkim.config.settings import Settings, load, parse

__all__ = ["Settings", "keyword_reference", "load", "parse"]
