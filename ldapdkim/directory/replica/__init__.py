"""The RFC 4533 content-sync replica.

Its consumer, its store of entries, its saved state and its status file.
"""
