"""Message search for Chinese and English on SQLite and MySQL/MariaDB, with nothing for the
administrator to install: imchat makes its own tokens (text.py) and stores them where each
engine indexes them best (SQLite: an FTS5 table, sqlite_index.py; MySQL/MariaDB: posting lists
sealed per block of message ids, mysql_blocks.py, and the newest messages read as they are,
mysql_index.py); a background indexer keeps the index up to date (indexer.py); a query
asks the index for candidates in the conversations the caller may read (the rule is
app/service/access.py's) and checks each on its stored text, within budgets (query.py).
Why each engine stores what it does, and what it costs: bench/NOTES.md "Message search".
"""

from app.chat.wire import CMD_GROUP, CMD_SINGLE
from app.service.search.indexer import (
    SEARCH_TABLES,
    Indexer,
    create_tables,
    forget_index,
    index_changed_messages,
    index_pending,
    reindex,
    unindex,
)
from app.service.search.query import Budget, search
from app.service.search.text import Query, fold, match_of, normalise, parse_query, spaced

__all__ = ["CMD_GROUP", "CMD_SINGLE", "SEARCH_TABLES", "Budget", "Indexer", "Query",
           "create_tables", "fold", "forget_index", "index_changed_messages", "index_pending",
           "match_of", "normalise", "parse_query", "reindex", "search", "spaced", "unindex"]
