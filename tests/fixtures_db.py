"""Database fixtures: SQLite files and a throwaway PostgreSQL cluster."""
