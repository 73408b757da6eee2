"""The config file (contracts §2, §7), validated once: the policy, the feeds, secrets
and hosts, TOML line numbers. Each channel type checks its own table (warnd.edges.channels).
"""
