"""The domain, pure: division codes, the contacts directory, CAP, the 631 rules and
the rung table (chain/), deadlines, durations, clocks, the texts people receive, errors.
It imports nothing from the store, the engine, the edges, the desk or the commands, and
neither SQLAlchemy nor aiohttp (tests/test_layout.py).
"""
