"""Column types the migrations share. Frozen: a migration must build the same schema forever,
so these never follow later changes to schema.py."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql


def exact_string(length: int) -> sa.types.TypeEngine[str]:
    """Byte-wise comparison on MySQL/MariaDB too (their default collations ignore case)."""
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
    )
