"""Publishing keys in DNS: zone records, DNS checks, RFC 2136 updates and the key audit."""
