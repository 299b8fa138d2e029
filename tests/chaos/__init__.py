"""The fault campaign (docs/reliability.md): `tests/chaos/run` for a campaign on a lab of its own,
tests/e2e/test_chaos.py for the short one on the e2e run's shared lab."""
