"""The task store: TaskStore (task_store.py) over a Database (connection.py), the schema (schema.py),
the task graph (dag.py), and every SQL statement of both backends (sql.py)."""
