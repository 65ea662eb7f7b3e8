"""Loaded by every Python process started with this folder first on PYTHONPATH (seeds/scripts/crashmatrix.py
puts it there): does nothing unless CRASHMATRIX_LOG names a file, then records the state changes of the
process (and applies a fault after one of them) through ``crashmatrix_probe``."""

import os

if os.environ.get("CRASHMATRIX_LOG"):
    import crashmatrix_probe

    crashmatrix_probe.install()
