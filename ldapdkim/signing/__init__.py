"""Signing and verifying one message: signer, body hash, policy, Authentication-Results, the
DNS key lookup, and ARC (verifying and sealing a message's chain).
"""
