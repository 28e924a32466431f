"""Evolutionary search: pure engine (evolution.py), scorers, Ray Tune searcher and runner."""
