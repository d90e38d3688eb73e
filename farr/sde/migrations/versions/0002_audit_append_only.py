"""The audit log is append-only: the database itself refuses UPDATE and DELETE on it.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SQLITE = """CREATE TRIGGER audit_log_no_{op} BEFORE {OP} ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"""
POSTGRES_FUNCTION = """CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$ LANGUAGE plpgsql"""
POSTGRES = """CREATE TRIGGER audit_log_no_{op} BEFORE {OP} ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(POSTGRES_FUNCTION)
    for name in ("update", "delete"):
        op.execute((POSTGRES if postgres else SQLITE).format(op=name, OP=name.upper()))


def downgrade() -> None:
    for name in ("update", "delete"):
        op.execute(f"DROP TRIGGER audit_log_no_{name}"
                   + (" ON audit_log" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_log_append_only()")
