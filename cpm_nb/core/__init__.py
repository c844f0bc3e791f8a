"""Foundations: profiles, errors, the skeleton, paths, the runtime, safe files."""
