"""`make bench`: the service against this machine's ceiling, a per-request baseline and peers.

Run with `python -m bench` (see `python -m bench --help`); results go to bench/results/.
"""
