"""The milter.

The pymilter session and the daemon process around it.
"""
