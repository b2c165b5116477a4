"""The one build step pyproject.toml cannot state without setuptools' experimental table: the C
parts of the search indexer: `imchat_spaced` for SQLite (app/service/search/_spacing.c) and a
block's posting rows for MySQL/MariaDB (app/service/search/_postings.c). Both are optional: where
they cannot be compiled (no C compiler or SQLite headers) the install goes on and the indexer uses
the same functions in Python (sqlite_index.py, mysql_blocks.py)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("app.service.search._spacing",
                             sources=["app/service/search/_spacing.c"],
                             libraries=["sqlite3"], optional=True),
                   Extension("app.service.search._postings",
                             sources=["app/service/search/_postings.c"], optional=True)])
