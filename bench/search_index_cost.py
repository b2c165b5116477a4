"""What indexing one message for search costs, engine by engine (issue 13), measured apart from
the chat path: CPU per message of this process (all its threads: on SQLite the text is cut in
the database connection's thread) and, on MariaDB, of the database server too.

    .venv/bin/python bench/search_index_cost.py --engine sqlite              # the app's FTS5 index
    .venv/bin/python bench/search_index_cost.py --engine mysql               # the app's token table
    .venv/bin/python bench/search_index_cost.py --engine mysql-fulltext      # the rejected option
    .venv/bin/python bench/search_index_cost.py --engine mysql-fulltext --scoped

`--text corpus` indexes search_bench.py's generated chat (1:1 and group); `--text sentence`
the sentence of `bench/run.py --text` after a stamp, one to one. `--before N` indexes N messages
first (an index that is already large costs more per insert on MariaDB). `mysql-fulltext` is
not what imchat does: InnoDB FULLTEXT over imchat-made tokens encoded as words of 3+ ASCII
characters (c<hex> per CJK character, w<word>, s<scope>), for the figures in bench/NOTES.md:
its insert cost, and its latency newest first for one user's conversations; `--scoped` makes
each word that of one conversation (g<group>x<hex>, d<low>y<high>x<hex>: what FULLTEXT would
need to read only the caller's conversations).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))
sys.path.insert(0, str(REPO_DIR / "bench"))

from search_bench import say, sentence  # noqa: E402

SENTENCE = "明天的会议改到三点，Q3 预算 deploy 到 production 之前大家再 review 一下"
DATABASE = "bench_search_index_cost"


def messages(first: int, count: int, text: str, rng: random.Random) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(first, first + count):
        if text == "sentence":
            row: tuple[Any, ...] = (i, 10, 1 + i % 200, 1 + (i + 1) % 200, None,
                                    f"{time.time():.6f} {SENTENCE}")
        elif rng.random() < 0.7:
            row = (i, 11, rng.randint(1, 2000), None, rng.randint(1, 200), sentence(rng))
        else:
            a, b = rng.sample(range(1, 2001), 2)
            row = (i, 10, a, b, None, sentence(rng))
        rows.append((*row[:5], f"c{i}", 1, row[5], "", "", "", 0, 1_700_000_000_000))
    return rows


def database_cpu() -> float:
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in ("mariadbd", "mysqld"):
            times = process.cpu_times()
            return float(times.user + times.system)
    return 0.0


async def app_engine(args: argparse.Namespace) -> None:
    from tortoise import Tortoise

    from app.model.database import close_database, connection_name, open_database
    from app.service.search import index_pending
    from app.settings import load_settings

    env = {"IMCHAT_DATABASE_ENGINE": args.engine, "IMCHAT_STORAGE_UPLOAD_DIR": "/tmp/resource",
           "IMCHAT_DATABASE_PATH": str(args.sqlite), "IMCHAT_DATABASE_NAME": DATABASE,
           "IMCHAT_DATABASE_HOST": args.mysql_host, "IMCHAT_DATABASE_USER": "root",
           "IMCHAT_DATABASE_PASSWORD": ""}
    await open_database(load_settings(None, environ=env), progress=lambda line: None)
    connection = Tortoise.get_connection(connection_name())
    mark = "?" if args.engine == "sqlite" else "%s"
    insert = ("INSERT INTO im_message (id, cmd, sender_id, dst_user_id, community_id, cid, "
              f"media, content, pic, url, memo, amount, created_ms) VALUES "
              f"({', '.join([mark] * 13)})")
    rng = random.Random(13)

    async def add(first: int, count: int) -> None:
        for start in range(first, first + count, 5000):
            await connection.execute_many(insert, messages(
                start, min(5000, first + count - start), args.text, rng))

    await add(1, args.before)
    while await index_pending(connection, 20_000):
        pass
    await add(args.before + 1, args.messages)
    own, server = time.process_time(), database_cpu()
    done = 0
    while indexed := await index_pending(connection):
        done += indexed
    own, server = time.process_time() - own, database_cpu() - server
    # (On MariaDB the server's CPU counts whatever else uses it meanwhile: a shared machine.)
    elsewhere = (f" + {server / done * 1e6:.1f} µs the database server's"
                 if args.engine == "mysql" else "")
    say(f"{args.engine}: {done} messages ({args.text}) after {args.before}: "
        f"{own / done * 1e6:.1f} µs CPU of this process{elsewhere} per message")
    await close_database()


def encoded(text: str) -> str:
    from app.service.search.text import fold, runs

    words = []
    for cjk, run in runs(fold(text)):
        words += [f"c{ord(c):x}" for c in run] if cjk else ["w" + run[:80]]
    return " ".join(words)


def scope_words(row: tuple[Any, ...]) -> list[str]:
    """A stored message's conversation as a word: the group, or the pair of users."""
    if row[1] == 11:
        return [f"g{row[4]}"]
    low, high = sorted((row[2], row[3]))
    return [f"d{low}y{high}"]


def scoped(text: str, scopes: list[str]) -> str:
    """Each token of the text (tokens_of's: characters, pairs, words) as one word per scope:
    the scope, then the hex of the token's UTF-8 (at most 64 digits: InnoDB's longest word is
    84 characters)."""
    from app.service.search.text import tokens_of

    tokens = [t.encode().hex()[:64] for t in tokens_of(text)]
    return " ".join(f"{scope}x{token}" for scope in scopes for token in tokens)


def fresh_database(args: argparse.Namespace) -> Any:
    """A cursor on an empty bench database of the MariaDB at --mysql-host."""
    import pymysql

    db = pymysql.connect(host=args.mysql_host, user="root", autocommit=True, charset="utf8mb4")
    cursor = db.cursor()
    cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    cursor.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
    cursor.execute(f"USE {DATABASE}")
    return cursor


def timed_messages(first: int, count: int, text: str, rng: random.Random,
                   spent: list[float]) -> list[tuple[Any, ...]]:
    """`messages`, adding the CPU it took to `spent[0]` (not part of indexing)."""
    started = time.process_time()
    rows = messages(first, count, text, rng)
    spent[0] += time.process_time() - started
    return rows


def fulltext(args: argparse.Namespace) -> None:
    cursor = fresh_database(args)
    cursor.execute("CREATE TABLE doc (FTS_DOC_ID BIGINT UNSIGNED NOT NULL PRIMARY KEY, "
                   "body MEDIUMTEXT CHARACTER SET ascii NOT NULL, scope VARCHAR(64) CHARACTER SET "
                   "ascii NOT NULL, FULLTEXT KEY (body, scope)) ENGINE=InnoDB")
    rng = random.Random(13)
    generating = [0.0]
    own, server = time.process_time(), database_cpu()
    for start in range(1, args.messages + 1, 1000):
        rows = timed_messages(start, min(1000, args.messages + 1 - start), args.text, rng,
                              generating)
        if args.scoped:
            documents = [(r[0], scoped(r[7], scope_words(r)), "") for r in rows]
        else:
            documents = [(r[0], encoded(r[7]), f"sg{r[4]}" if r[1] == 11 else
                          f"su{r[2]} su{r[3]}") for r in rows]
        cursor.executemany("INSERT INTO doc VALUES (%s, %s, %s)", documents)
    own, server = time.process_time() - own - generating[0], database_cpu() - server
    say(f"mysql-fulltext{' --scoped' if args.scoped else ''}: {args.messages} messages "
        f"({args.text}): {own / args.messages * 1e6:.1f} µs CPU of this process + "
        f"{server / args.messages * 1e6:.1f} µs the database server's per message")
    if args.scoped:
        scoped_latency(cursor)
        cursor.execute(f"DROP DATABASE {DATABASE}")
        return
    scope = " ".join(["su1"] + [f"sg{g}" for g in range(1, 41)])
    for label, words in (("two-character word", ["会议", "预算", "客户", "上线", "文档"]),
                         ("single character", ["会", "预", "客"]), ("very common", ["的", "了"]),
                         ("English word", ["deploy", "budget", "hotfix"])):
        took = []
        for word in words:
            tokens = encoded(word).split()
            term = f'+"{" ".join(tokens)}"' if tokens[0].startswith("c") else f"+{tokens[0]}*"
            for _ in range(3):
                started = time.perf_counter()
                cursor.execute("SELECT FTS_DOC_ID FROM doc WHERE MATCH(body, scope) AGAINST "
                               "(%s IN BOOLEAN MODE) ORDER BY FTS_DOC_ID DESC LIMIT 20",
                               (f"{term} +({scope})",))
                cursor.fetchall()
                took.append((time.perf_counter() - started) * 1000)
        say(f"  {label}: median {statistics.median(took):.1f} ms, max {max(took):.1f} ms")
    cursor.execute(f"DROP DATABASE {DATABASE}")


def scoped_latency(cursor: Any) -> None:
    """Newest 20 in user 1's conversations (groups 1-40, pairs with users 2-11), each term
    as its scoped words OR'd, the terms AND'ed."""
    scopes = [f"g{g}" for g in range(1, 41)] + [f"d1y{peer}" for peer in range(2, 12)]
    for label, words in (("two-character word", ["会议", "预算", "客户", "上线", "文档"]),
                         ("single character", ["会", "预", "客"]), ("very common", ["的", "了"]),
                         ("English word", ["deploy", "budget", "hotfix"])):
        took = []
        for word in words:
            term = word.encode().hex()
            wild = "*" if word.isascii() else ""
            query = "+(" + " ".join(f"{scope}x{term}{wild}" for scope in scopes) + ")"
            for _ in range(3):
                started = time.perf_counter()
                cursor.execute("SELECT FTS_DOC_ID FROM doc WHERE MATCH(body, scope) AGAINST "
                               "(%s IN BOOLEAN MODE) ORDER BY FTS_DOC_ID DESC LIMIT 20", (query,))
                cursor.fetchall()
                took.append((time.perf_counter() - started) * 1000)
        say(f"  {label}: median {statistics.median(took):.1f} ms, max {max(took):.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["sqlite", "mysql", "mysql-fulltext"],
                        default="sqlite")
    parser.add_argument("--scoped", action="store_true",
                        help="mysql-fulltext: a word per token and conversation")
    parser.add_argument("--text", choices=["corpus", "sentence"], default="sentence")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--before", type=int, default=0)
    parser.add_argument("--sqlite", type=Path, default=Path("/tmp/search_index_cost.db"))
    parser.add_argument("--mysql-host", default="127.0.0.1")
    args = parser.parse_args()
    if args.engine == "mysql-fulltext":
        fulltext(args)
        return 0
    if args.engine == "mysql":
        import pymysql

        db = pymysql.connect(host=args.mysql_host, user="root", autocommit=True)
        db.cursor().execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        db.cursor().execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{args.sqlite}{suffix}").unlink(missing_ok=True)
    asyncio.run(app_engine(args))
    if args.engine == "mysql":
        db.cursor().execute(f"DROP DATABASE {DATABASE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
