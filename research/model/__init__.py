"""Decoder-only transformer; `transformer.py` is the only place positional hooks are called."""
