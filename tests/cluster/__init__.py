"""Multi-host cluster tests: a salt-master plus minion hosts (tests/lab/cluster.py)."""
