"""The shared MetaData, with a naming convention so every constraint has a stable name that
migrations can refer to on both engines."""

from sqlalchemy import BigInteger, Integer, MetaData

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: A 64-bit integer primary key that is still SQLite's rowid alias (SQLite only aliases INTEGER).
BigId = BigInteger().with_variant(Integer(), "sqlite")
