"""The search scenario (issue 13): a generated corpus of realistic mixed Chinese/English chat,
indexed the way the schema upgrade indexes an existing database, then search latency for one
user in 50 conversations, and the index's size relative to the messages.

The corpus is written by direct bulk inserts (no HTTP, no chat path: a million messages through
the server would take hours) into a database opened and upgraded by the app itself, then indexed
by `app.service.search.reindex` (what `imchat reindex` and the migration run), timed. It is kept
under --cache (one file or MariaDB database per engine and size) and reused by later runs.

Latency is measured on the service call `app.service.search.search` in this process (what the
route runs after parsing; the HTTP envelope adds the same small constant as every other route),
with the settings' default budgets, each query class run over several words, warm cache.

    .venv/bin/python bench/search_bench.py --engine sqlite                 # 1,000,000 messages
    .venv/bin/python bench/search_bench.py --engine mysql --messages 200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

CN_WORDS = ["会议", "预算", "项目", "上线", "明天", "今天", "客户", "需求", "测试", "问题", "时间",
            "安排", "文档", "代码", "发布", "服务器", "数据库", "周报", "午饭", "下班", "方案",
            "同事", "经理", "报告", "合同", "价格", "设计", "接口", "版本", "用户", "反馈", "进度",
            "评审", "部署", "告警", "日志", "性能", "优化", "计划", "目标", "周末", "加班", "出差",
            "机票", "酒店", "面试", "培训", "邮件", "电话", "附件", "表格", "图片", "视频"]
CN_FILLER = ["的", "了", "吗", "呢", "我们", "你", "他", "这个", "那个", "一下", "已经", "还没",
             "可以", "需要", "看看", "好的", "没问题", "谢谢", "辛苦", "收到", "在", "和", "把",
             "都", "也", "再", "先", "就", "是", "有", "没有", "大家", "请", "帮忙"]
EN_WORDS = ["deploy", "deployment", "release", "meeting", "budget", "Q3", "bug", "fix",
            "review", "PR", "merge", "server", "database", "ok", "thanks", "lunch", "tomorrow",
            "today", "customer", "report", "design", "api", "version", "test", "staging",
            "production", "rollback", "hotfix", "sprint", "demo", "deadline", "invoice", "the",
            "is", "we", "please", "check", "update", "call", "sync", "plan", "docs", "link"]

QUERIES = {
    "two-character Chinese word": ["会议", "预算", "客户", "上线", "文档", "告警", "机票", "面试",
                                   "合同", "进度"],
    "single character": ["会", "预", "客", "线", "档", "警", "票", "试", "同", "度"],
    "English word": ["deploy", "budget", "meeting", "rollback", "invoice", "staging", "hotfix",
                     "sprint", "customer", "release"],
    # The worst case: characters and words in a large share of all messages.
    "very common character or word": ["的", "了", "我", "好", "the", "we"],
    "phrase": ["明天的会议", "Q3 预算", "deploy to production", "客户反馈", "上线 rollback",
               "周报 report", "还没上线", "review PR", "需要评审", "hotfix 部署"],
}


def say(line: str) -> None:
    """A progress line on stdout, at once (the run takes minutes)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def sentence(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(2, 12)):
        pick = rng.random()
        if pick < 0.45:
            parts.append(rng.choice(CN_WORDS))
        elif pick < 0.80:
            parts.append(rng.choice(CN_FILLER))
        else:
            parts.append(" " + rng.choice(EN_WORDS) + " ")
    text = "".join(parts).strip()
    if rng.random() < 0.3:
        text += rng.choice(["。", "？", "!", "~", "👍", "，明天再说", " ok"])
    return " ".join(text.split())


async def build(settings: Any, messages: int, users: int, groups: int, seed: int) -> dict:
    """Users, groups, memberships and messages by bulk insert; user 1 is in 40 groups and
    talks to 10 peers one to one. Answers the corpus's facts."""
    from tortoise import Tortoise

    from app.model.database import connection_name
    from app.service.search import reindex

    rng = random.Random(seed)
    connection = Tortoise.get_connection(connection_name())
    sqlite = connection.capabilities.dialect == "sqlite"
    mark = "?" if sqlite else "%s"
    now = int(time.time() * 1000) - 365 * 86400 * 1000
    await connection.execute_many(
        f"INSERT INTO im_user (id, mobile, passwd_hash, nickname, avatar, sex, memo, disabled, "
        f"legacy_delivered_id, created_ms) VALUES ({', '.join([mark] * 10)})",
        [(i, f"s{i:07d}", "x", f"u{i}", "", "U", "", 0, 0, now) for i in range(1, users + 1)])
    await connection.execute_many(
        f"INSERT INTO im_community (id, name, owner_id, icon, memo, cate, is_private, "
        f"created_ms) VALUES ({', '.join([mark] * 8)})",
        [(g, f"group{g}", 1 + (g * 7) % users, "", "", 1, 0, now) for g in range(1, groups + 1)])
    members: dict[int, list[int]] = {}
    rows = []
    for g in range(1, groups + 1):
        chosen = set(rng.sample(range(2, users + 1), rng.randint(20, 80)))
        if g <= 40:
            chosen.add(1)
        members[g] = sorted(chosen)
        rows += [(g, u, now) for u in members[g]]
    await connection.execute_many(
        f"INSERT INTO im_membership (community_id, user_id, role, created_ms) VALUES "
        f"({mark}, {mark}, 0, {mark})", rows)
    peers_of_1 = list(range(2, 12))
    batch = []
    done = 0
    started = time.monotonic()
    insert = (f"INSERT INTO im_message (id, cmd, sender_id, dst_user_id, community_id, cid, "
              f"media, content, pic, url, memo, amount, created_ms) VALUES "
              f"({', '.join([mark] * 13)})")
    for message_id in range(1, messages + 1):
        created = now + message_id * 20
        if rng.random() < 0.7:
            group = rng.randint(1, groups)
            row = (message_id, 11, rng.choice(members[group]), None, group)
        else:
            if rng.random() < 0.01:  # user 1's own chats: about 1% of the one-to-one traffic
                a, b = 1, rng.choice(peers_of_1)
            else:
                a, b = rng.sample(range(2, users + 1), 2)
            if rng.random() < 0.5:
                a, b = b, a
            row = (message_id, 10, a, b, None)
        batch.append((*row, f"c{message_id}", 1, sentence(rng), "", "", "", 0, created))
        if len(batch) == 5000:
            await connection.execute_many(insert, batch)
            done += len(batch)
            batch = []
            if done % 100_000 == 0:
                say(f"  {done} messages written ({time.monotonic() - started:.0f} s)")
    if batch:
        await connection.execute_many(insert, batch)
    written = time.monotonic() - started
    say(f"corpus written: {messages} messages in {written:.0f} s; indexing")
    started = time.monotonic()
    await reindex(connection, say)
    indexed = time.monotonic() - started
    return {"messages": messages, "users": users, "groups": groups, "seed": seed,
            "write_seconds": round(written, 1), "index_seconds": round(indexed, 1)}


async def sizes(settings: Any) -> dict[str, int]:
    from app.model.database import fetch_all

    if settings.database.engine == "sqlite":
        rows = await fetch_all("SELECT name, SUM(pgsize) AS bytes FROM dbstat GROUP BY name")
        by_name = {r["name"]: int(r["bytes"]) for r in rows}
        messages = sum(v for k, v in by_name.items()
                       if k == "im_message" or k.startswith("idx_im_messag")
                       or k.startswith("uid_im_messag") or k.startswith("sqlite_autoindex_im_message"))
        index = sum(v for k, v in by_name.items() if k.startswith("im_search")
                    or k.startswith("sqlite_autoindex_im_search"))
        return {"messages_bytes": messages, "index_bytes": index}
    rows = await fetch_all(
        "SELECT table_name AS name, data_length + index_length AS bytes FROM "
        "information_schema.tables WHERE table_schema = DATABASE()")
    by_name = {r["name"]: int(r["bytes"]) for r in rows}
    return {"messages_bytes": by_name.get("im_message", 0),
            "index_bytes": sum(v for k, v in by_name.items() if k.startswith("im_search"))}


async def measure(settings: Any, repeats: int) -> dict[str, Any]:
    from app.service import search

    budget = search.Budget(settings.search.max_candidates, settings.search.max_query_ms / 1000)
    results: dict[str, Any] = {}
    for label, words in QUERIES.items():
        samples = []
        found = []
        for word in words:
            query = search.parse_query(word, settings.search.max_query_length)
            await search.search(1, query, None, None, None, 20, budget)  # warm
            for _ in range(repeats):
                started = time.perf_counter()
                answer = await search.search(1, query, None, None, None, 20, budget)
                samples.append((time.perf_counter() - started) * 1000)
            found.append(len(answer["rows"]))
        samples.sort()
        results[label] = {
            "p50_ms": round(statistics.median(samples), 2),
            "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 2),
            "queries": len(samples), "rows_per_answer_median": statistics.median(found)}
        say(f"  {label}: p50 {results[label]['p50_ms']} ms, p95 {results[label]['p95_ms']} ms "
              f"({len(samples)} queries, median {statistics.median(found)} rows)")
    return results


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["sqlite", "mysql"], default="sqlite")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each query")
    parser.add_argument("--cache", type=Path, default=REPO_DIR / "bench" / "results" / "search")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--mysql-host", default="127.0.0.1")
    parser.add_argument("--mysql-user", default="root")
    parser.add_argument("--mysql-password", default="")
    args = parser.parse_args()

    from app.model.database import close_database, open_database
    from app.settings import load_settings

    args.cache.mkdir(parents=True, exist_ok=True)
    name = f"search_{args.messages}_{args.users}_{args.groups}_{args.seed}"
    env = {"IMCHAT_DATABASE_ENGINE": args.engine,
           "IMCHAT_DATABASE_PATH": str(args.cache / f"{name}.db"),
           "IMCHAT_STORAGE_UPLOAD_DIR": str(args.cache / "resource")}
    if args.engine == "mysql":
        import pymysql

        server = pymysql.connect(host=args.mysql_host, user=args.mysql_user,
                                 password=args.mysql_password, autocommit=True)
        with server.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS bench_{name} CHARACTER SET utf8mb4")
        server.close()
        env.update({"IMCHAT_DATABASE_HOST": args.mysql_host,
                    "IMCHAT_DATABASE_USER": args.mysql_user,
                    "IMCHAT_DATABASE_PASSWORD": args.mysql_password,
                    "IMCHAT_DATABASE_NAME": f"bench_{name}"})
    settings = load_settings(None, environ=env)
    facts_file = args.cache / f"{name}.{args.engine}.json"
    await open_database(settings, progress=lambda line: None)
    try:
        if facts_file.exists():
            facts = json.loads(facts_file.read_text())
            say(f"corpus from cache: {facts_file}")
        else:
            facts = await build(settings, args.messages, args.users, args.groups, args.seed)
            facts_file.write_text(json.dumps(facts))
        facts["sizes"] = await sizes(settings)
        ratio = facts["sizes"]["index_bytes"] / max(1, facts["sizes"]["messages_bytes"])
        say(f"index {facts['sizes']['index_bytes'] / 2**20:.0f} MiB, messages (table and "
            f"indexes) {facts['sizes']['messages_bytes'] / 2**20:.0f} MiB: {ratio:.2f}x")
        facts["latency"] = await measure(settings, args.repeats)
    finally:
        await close_database()
    out = args.cache / f"{name}.{args.engine}.result.json"
    out.write_text(json.dumps(facts, indent=1))
    say(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
