"""The directory: domain → entry resolution, entries and their index, the LDIF and LDAP backends,
the writer, the cache of resolutions, and the content-sync replica.
"""
