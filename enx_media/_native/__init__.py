"""Compiled packet core (built from ext/ by setup.py)."""
