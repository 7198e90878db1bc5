"""The directory.

Domain → entry resolution, entries and their index, the LDIF and LDAP backends,
the writer, the cached resolver.
"""
