"""Retrieval: the sparse, dense and graph legs and their fusion."""
