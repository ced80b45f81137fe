"""Batch recognition of pages: torch-free page streaming and write-back, and the run that recognises them."""
