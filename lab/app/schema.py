"""Database schema and seed data for the CloudMart backend.

The harness calls `ensure_schema` once the PostgreSQL cluster is up, before any app server
takes traffic. It is plain synchronous psycopg because it runs from the harness, not the app.
"""

from __future__ import annotations

import psycopg

# Any constant works; it only has to be the same for every caller so that two
# harness processes seeding the same cluster queue up instead of racing on CREATE TABLE.
_SCHEMA_LOCK_ID = 0x0C10_0D4A

_DDL = (
    """
    CREATE TABLE IF NOT EXISTS products (
        id int PRIMARY KEY,
        name text NOT NULL,
        price_cents int NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS orders (
        id bigserial PRIMARY KEY,
        idempotency_key text UNIQUE,
        item text NOT NULL,
        quantity int NOT NULL,
        user_id text,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
)

# Deterministic so that every run (and every test) sees the same catalogue:
# "Product 17" always costs the same, between 5.00 and 94.99.
_SEED_PRODUCTS = """
    INSERT INTO products (id, name, price_cents)
    SELECT g, 'Product ' || g, 500 + (g * 7919) %% 9000
    FROM generate_series(1, %s) AS g
    ON CONFLICT (id) DO NOTHING
"""


def ensure_schema(conninfo: str, products: int = 300) -> None:
    """Create the tables if missing and seed products 1..`products`; safe to call repeatedly."""
    if products < 0:
        raise ValueError("products must be >= 0")
    with psycopg.connect(conninfo, connect_timeout=10) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_ID,))
        for statement in _DDL:
            conn.execute(statement)
        conn.execute(_SEED_PRODUCTS, (products,))
