"""The one build step pyproject.toml cannot state without setuptools' experimental table: the C
part of the search indexer, `imchat_spaced` for SQLite (app/service/search/_spacing.c). It is
optional: where it cannot be compiled (no C compiler or SQLite headers) the install goes on and
the indexer uses the same function in Python (app/service/search/sqlite_index.py)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("app.service.search._spacing",
                             sources=["app/service/search/_spacing.c"],
                             libraries=["sqlite3"], optional=True)])
