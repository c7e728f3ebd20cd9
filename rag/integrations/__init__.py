"""Adapters that let other frameworks use the notes index (each behind its own optional extra)."""
