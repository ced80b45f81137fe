"""Batch recognition of pages: pages.py streams, cuts and writes them (no torch), recognise.py runs the model."""
