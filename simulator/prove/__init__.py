"""`otasim prove`: the security proving ground (power cuts at every write, attack matrix).

Each proof drives the real agent on a real disk, against the real reference server or a
hostile loopback server, and returns figures a test can check and the command prints.
"""
