"""Helpers shared by the test suites: servers in threads and subprocesses, fake
recipes and a fake Trainer, a throw-away PKI, configs and waiting helpers. No
tests here; the shared pytest fixtures stay in tests/conftest.py, where pytest
looks for them."""
