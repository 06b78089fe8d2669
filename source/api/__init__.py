"""The HTTP API (serve.py): FastAPI app over the task store; one concept per module."""
