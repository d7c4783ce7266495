"""A throw-away PostgreSQL database: created empty, dropped afterwards.

Why here: the tests (one database per test) and the multi-lab benchmark (one per run) both need
a fresh campaign database on a running server; one home keeps the create/drop (and the
``WITH (FORCE)`` that ends sessions a killed controller left) the same for both.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator


@contextlib.contextmanager
def scratch_database(server: str, *, prefix: str = "synthloop_") -> Iterator[str]:
    """Yield the URL of a new, empty database on ``server`` (a URL of any database there);
    drop it on exit, ending any sessions still open on it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
