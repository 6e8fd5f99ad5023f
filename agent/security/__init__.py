"""Pure verification: checksum, signature, Capgo v2 session key, AES stream."""
