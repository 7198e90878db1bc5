"""The RFC 4533 content-sync replica: its consumer, its store of entries, its saved state and
status file.
"""
