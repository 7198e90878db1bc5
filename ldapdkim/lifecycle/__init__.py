"""The life of keys and domains: provisioning, rotation and migration from OpenDKIM."""
