"""Benchmarks: direct PostgreSQL vs PgBouncer vs Oversight, measured in one run (see README.md)."""
