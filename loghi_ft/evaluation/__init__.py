"""Scoring readings against ground truth: error counts, CER/WER tables, the HTML comparison page."""
