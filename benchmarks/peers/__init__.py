"""pg8000's, psycopg2's and asyncpg's own test suites, directly and through Oversight."""
