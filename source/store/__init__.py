"""The task store: schema, migrations and the SQL of each backend (SQLite, PostgreSQL)."""
