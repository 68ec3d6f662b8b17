#!/usr/bin/env bash
# make bench: export one simulated day from PostgreSQL with gim-export (release build) and, on the
# same rows, the floor pipeline (psql \copy per table, zip, sha1sum); then load that export into an
# empty and into a full PostgreSQL target, beside the floor by hand (psql COPY into a temporary table,
# INSERT ... ON CONFLICT DO UPDATE, one transaction). Prints a table and writes JSON
# to target/bench/export.json. The source database is created once and cached (gim_bench_<rows>).
# Knobs: BENCH_INTERACTIONS (per day, default 210000 = ~1.1M rows), BENCH_RUNS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/gim-export
IPD=${BENCH_INTERACTIONS:-210000}
RUNS=${BENCH_RUNS:-3}
DB="gim_bench_${IPD}"
PGURL="postgres://postgres@127.0.0.1:5432/${DB}"
PSQL=(psql -h 127.0.0.1 -U postgres -qtA)
WORK=$(mktemp -d /tmp/gim-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p target/bench

for tool in zip /usr/bin/time; do
  if ! command -v "$tool" >/dev/null; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$(basename "$tool")" >/dev/null
  fi
done

# The cached source: one simulated day, plus the next day's first minutes so that day 1 is settled.
if [ "$("${PSQL[@]}" -d postgres -c "select 1 from pg_database where datname='${DB}'")" != "1" ]; then
  echo "bench: simulating ${IPD} interactions into ${DB} (once)" >&2
  "${PSQL[@]}" -d postgres -c "create database ${DB}"
  "$BIN" -q simulate --source "$PGURL" --days 1 --interactions-per-day "$IPD" --seed 3 >&2
  "${PSQL[@]}" -d "$DB" -c "vacuum analyze" >&2
fi

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# measure CMD...: prints "seconds maxrss_kib"
measure() {
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  cat "$WORK/time"
}

ours_s=(); ours_rss=()
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/out"
  read -r s rss < <(measure "$BIN" -q export --source "$PGURL" --output "$WORK/out")
  ours_s+=("$s"); ours_rss+=("$rss")
done
folder=$(ls "$WORK/out" | grep '^export_' | head -n 1)
xml="$WORK/out/$folder/$folder.extracted.xml"
rows=$(grep -o 'rows="[0-9]*"' "$xml" | tr -dc '0-9\n' | awk '{s += $1} END {print s}')
bytes=$(grep -o 'bytes="[0-9]*"' "$xml" | tr -dc '0-9\n' | awk '{s += $1} END {print s}')
from=$(grep -o '<hwm-from audit-key="[0-9]*"' "$xml" | tr -dc '0-9')
to=$(grep -o '<hwm-to audit-key="[0-9]*"' "$xml" | tr -dc '0-9')
tables=$(unzip -Z1 "$WORK/out/$folder/$folder.zip" | grep '\.csv$' | sed 's/\.csv$//')

# The floor: what a shell script of psql + zip + sha1sum does for the same rows.
cat > "$WORK/floor.sh" <<SH
set -e
cd "\$1"; rm -rf f; mkdir f; cd f
for t in $(echo $tables); do
  cond="create_audit_key between $((from + 1)) and $to"
  if [ "\$(psql -h 127.0.0.1 -U postgres -d $DB -qtAc "select count(*) from information_schema.columns where table_name='\$t' and column_name='update_audit_key'")" = 1 ]; then
    cond="\$cond or update_audit_key between $((from + 1)) and $to"
  fi
  psql -h 127.0.0.1 -U postgres -d $DB -qc "\\\\copy (select * from \$t where \$cond order by 1) to '\$t.csv' csv header"
  [ "\${2:-}" = copy-only ] || sha1sum "\$t.csv" > "\$t.csv.sha1"
done
[ "\${2:-}" = copy-only ] && exit 0
zip -q export.zip *.csv *.csv.sha1
sha1sum export.zip > export.zip.sha1
SH
floor_s=(); copy_s=()
for i in $(seq "$RUNS"); do
  read -r s _ < <(measure bash "$WORK/floor.sh" "$WORK")
  floor_s+=("$s")
  read -r s _ < <(measure bash "$WORK/floor.sh" "$WORK" copy-only)
  copy_s+=("$s")
done


# Load: our loader into an empty PostgreSQL target, and the floor by hand with psql (COPY into a
# temporary table, then INSERT ... ON CONFLICT DO UPDATE, one transaction), on the same CSVs.
mkdir -p "$WORK/csv" && unzip -q -o "$WORK/out/$folder/$folder.zip" -d "$WORK/csv"
floor_load="$WORK/floor_load.sql"
{
  echo "\\set ON_ERROR_STOP on"
  echo "BEGIN;"
  for t in $tables; do
    cols=$(head -n 1 "$WORK/csv/$t.csv")
    pk=$(echo "$cols" | cut -d, -f1)
    set_list=$(echo "$cols" | tr ',' '\n' | tail -n +2 | awk '{printf "%s%s = excluded.%s", (NR > 1 ? ", " : ""), $1, $1}')
    echo "CREATE TEMP TABLE s_$t AS SELECT $cols FROM $t WITH NO DATA;"
    echo "\\copy s_$t ($cols) from '$WORK/csv/$t.csv' csv header"
    echo "INSERT INTO $t ($cols) SELECT $cols FROM s_$t ON CONFLICT ($pk) DO UPDATE SET $set_list;"
  done
  echo "COMMIT;"
} > "$floor_load"
fresh_target() {
  "${PSQL[@]}" -d postgres -c "drop database if exists gim_bench_target" -c "create database gim_bench_target"
  "$BIN" -q target-schema --apply postgres://postgres@127.0.0.1:5432/gim_bench_target >/dev/null
}
TARGET=postgres://postgres@127.0.0.1:5432/gim_bench_target
load_empty=(); load_full=(); floor_empty=(); floor_full=(); load_rss=()
for i in $(seq "$RUNS"); do
  fresh_target
  read -r s rss < <(measure "$BIN" -q load --input "$WORK/out" --target "$TARGET")
  load_empty+=("$s"); load_rss+=("$rss")
  # Into a target that already holds every row: forget the ledger so the same export applies again.
  "${PSQL[@]}" -d gim_bench_target -c "delete from gim_export_ledger"
  read -r s _ < <(measure "$BIN" -q load --input "$WORK/out" --target "$TARGET")
  load_full+=("$s")
  fresh_target
  read -r s _ < <(measure psql -h 127.0.0.1 -U postgres -d gim_bench_target -q -f "$floor_load")
  floor_empty+=("$s")
  read -r s _ < <(measure psql -h 127.0.0.1 -U postgres -d gim_bench_target -q -f "$floor_load")
  floor_full+=("$s")
done
"${PSQL[@]}" -d postgres -c "drop database if exists gim_bench_target"

o=$(printf '%s\n' "${ours_s[@]}" | median)
r=$(printf '%s\n' "${ours_rss[@]}" | median)
f=$(printf '%s\n' "${floor_s[@]}" | median)
c=$(printf '%s\n' "${copy_s[@]}" | median)
rate() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.0f", n / s}'; }
mbs() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.1f", n / s / 1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

printf '\nexport of one simulated day from PostgreSQL: %s rows, %s MB of CSV, %s tables (median of %s runs)\n\n' \
  "$rows" "$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1e6}')" "$(echo $tables | wc -w)" "$RUNS"
printf '%-34s %9s %12s %9s %10s %12s\n' "what" "wall s" "rows/s" "CSV MB/s" "peak RSS" "ours/this"
printf '%-34s %9s %12s %9s %10s %12s\n' "gim-export export" "$o" "$(rate "$rows" "$o")" "$(mbs "$bytes" "$o")" "$((r / 1024)) MiB" "1.00"
printf '%-34s %9s %12s %9s %10s %12s\n' "floor: psql \\copy + zip + sha1sum" "$f" "$(rate "$rows" "$f")" "$(mbs "$bytes" "$f")" "-" "$(ratio "$o" "$f")"
printf '%-34s %9s %12s %9s %10s %12s\n' "floor: psql \\copy alone" "$c" "$(rate "$rows" "$c")" "$(mbs "$bytes" "$c")" "-" "$(ratio "$o" "$c")"
le=$(printf '%s\n' "${load_empty[@]}" | median); lf=$(printf '%s\n' "${load_full[@]}" | median)
fe=$(printf '%s\n' "${floor_empty[@]}" | median); ff=$(printf '%s\n' "${floor_full[@]}" | median)
lr=$(printf '%s\n' "${load_rss[@]}" | median)
printf '\nload of that export into PostgreSQL (median of %s runs)\n\n' "$RUNS"
printf '%-34s %9s %12s %9s %10s %12s\n' "what" "wall s" "rows/s" "CSV MB/s" "peak RSS" "ours/floor"
printf '%-34s %9s %12s %9s %10s %12s\n' "gim-export load, empty target" "$le" "$(rate "$rows" "$le")" "$(mbs "$bytes" "$le")" "$((lr / 1024)) MiB" "$(ratio "$le" "$fe")"
printf '%-34s %9s %12s %9s %10s %12s\n' "floor: psql COPY+upsert, empty" "$fe" "$(rate "$rows" "$fe")" "$(mbs "$bytes" "$fe")" "-" "1.00"
printf '%-34s %9s %12s %9s %10s %12s\n' "gim-export load, full target" "$lf" "$(rate "$rows" "$lf")" "$(mbs "$bytes" "$lf")" "-" "$(ratio "$lf" "$ff")"
printf '%-34s %9s %12s %9s %10s %12s\n' "floor: psql COPY+upsert, full" "$ff" "$(rate "$rows" "$ff")" "$(mbs "$bytes" "$ff")" "-" "1.00"

cat > target/bench/export.json <<JSON
{"rows": $rows, "csv_bytes": $bytes, "runs": $RUNS,
 "ours": {"seconds": $o, "rows_per_s": $(rate "$rows" "$o"), "peak_rss_kib": $r},
 "floor_pipeline": {"seconds": $f, "ratio_ours": $(ratio "$o" "$f")},
 "floor_copy_only": {"seconds": $c, "ratio_ours": $(ratio "$o" "$c")},
 "load_empty": {"seconds": $le, "rows_per_s": $(rate "$rows" "$le"), "peak_rss_kib": $lr, "floor_seconds": $fe, "ratio": $(ratio "$le" "$fe")},
 "load_full": {"seconds": $lf, "rows_per_s": $(rate "$rows" "$lf"), "floor_seconds": $ff, "ratio": $(ratio "$lf" "$ff")}}
JSON
echo "wrote target/bench/export.json"
