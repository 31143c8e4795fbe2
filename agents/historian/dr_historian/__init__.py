"""platform.historian of volttron-dr: a SQLAlchemy historian (SQLite or PostgreSQL) with VOLTTRON's query API
and measurement-and-verification (M&V) of demand-response events.

Everything except `agent.py` is a plain module without a platform import.
"""

__version__ = "0.1.0"
