"""Signing and verifying one message: signer, body hash, policy, Authentication-Results and the
DNS key lookup.
"""
