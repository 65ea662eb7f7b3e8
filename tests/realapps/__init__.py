"""Projects made of real applications from PyPI, for tests/test_real_apps.py: settings and URLs only."""
