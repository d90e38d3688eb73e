"""Alembic environment: runs on the connection farr.sde.db.migrate hands over."""

from alembic import context

from farr.sde.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
