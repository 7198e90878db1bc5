"""The milter: the pymilter session and the daemon process around it."""
