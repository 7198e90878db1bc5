"""The life of keys and domains.

Provisioning, rotation, migration from OpenDKIM.
"""
