"""Scoring: the metrics (official MPII PCKh), validation passes, MPII .mat files."""
