"""Publishing keys in DNS.

Zone records, DNS checks, RFC 2136 updates, the key audit.
"""
