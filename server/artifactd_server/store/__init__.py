"""The SQL backend store: experiments, runs and their lifecycle (SQLAlchemy 2 + Alembic)."""
