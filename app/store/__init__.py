"""Persistence: the tables and their migrations, and one store per kind of record."""
