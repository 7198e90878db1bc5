"""Signing and verifying one message.

Signer, body hash, policy, Authentication-Results, DNS key lookup.
"""
