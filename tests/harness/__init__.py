"""Real servers and clients that the integration tests and benchmarks start.

Slapd, Postfix, Sendmail, DNS, milter processes, verifiers.
"""
