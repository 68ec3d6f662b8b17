//! Issue 12: MariaDB/MySQL as a load target, against the real server on 127.0.0.1:3306 (make test
//! starts it). Each test makes its own database and drops it after.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gim_export::package::ABORT_AFTER_ENV;

use crate::harness::*;

/// Every column of every exported row, from SQLite and from PostgreSQL sources, reaches MariaDB; a
/// second load applies nothing and changes nothing.
#[test]
fn sqlite_and_postgres_sources_round_trip_into_mariadb_and_a_second_load_changes_nothing() {
    let w = Workdir::new("my-roundtrip");
    let lite = w.sqlite_url("im.db");
    simulate(&w, &lite, 3, 300, 41);
    w.run(&["export", "--source", &lite, "--output", "out", "--catch-up"]);
    let my = MyDb::new("roundtrip");
    w.run(&["load", "--input", "out", "--target", &my.url()]);
    assert_target_matches_source(&lite, &my.url(), &w.join("out"));
    let before = dump_target(&my.url());
    let o = w.run_code(
        &mut w.command(&["load", "--input", "out", "--target", &my.url()]),
        3,
    );
    assert!(stdout(&o).contains("loaded 0 folder(s)"), "{}", stdout(&o));
    assert_eq!(dump_target(&my.url()), before);

    let pg = PgDb::new("my_pgsource");
    simulate(&w, &pg.url(), 2, 200, 43);
    w.run(&[
        "export",
        "--source",
        &pg.url(),
        "--output",
        "out-pg",
        "--catch-up",
    ]);
    let my2 = MyDb::new("roundtrip_pg");
    w.run(&["load", "--input", "out-pg", "--target", &my2.url()]);
    assert_target_matches_source(&pg.url(), &my2.url(), &w.join("out-pg"));
}

/// The same folders give the same rows in MariaDB as in PostgreSQL, including a full resync that
/// removes the rows the source no longer has.
#[test]
fn a_full_resync_into_mariadb_removes_what_the_source_deleted_as_postgres_does() {
    let w = Workdir::new("my-resync");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 200, 47);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let (my, pg) = (MyDb::new("resync"), PgDb::new("my_resync_ref"));
    for t in [my.url(), pg.url()] {
        w.run(&["load", "--input", "out", "--target", &t]);
    }
    let gone = query_rows(
        &src,
        "SELECT interaction_id FROM interaction_fact ORDER BY interaction_id LIMIT 3",
    );
    assert_eq!(gone.len(), 3);
    let ids: Vec<String> = gone.into_iter().map(|r| r[0].clone()).collect();
    let list = ids.join(", ");
    exec_sql(
        &src,
        &format!("DELETE FROM interaction_fact WHERE interaction_id IN ({list})"),
    );
    w.run(&[
        "export",
        "--source",
        &src,
        "--output",
        "out",
        "--full-resync",
    ]);
    for t in [my.url(), pg.url()] {
        w.run(&["load", "--input", "out", "--target", &t, "--accept-restart"]);
    }
    assert_eq!(dump_target(&my.url()), dump_target(&pg.url()));
    let left = format!("SELECT COUNT(*) FROM interaction_fact WHERE interaction_id IN ({list})");
    assert_eq!(query_one(&my.url(), &left), "0");
    let removed = query_one(
        &my.url(),
        "SELECT removed_counts FROM gim_export_ledger ORDER BY apply_seq DESC LIMIT 1",
    );
    assert!(removed.contains("\"interaction_fact\":3"), "{removed}");
}

/// What MariaDB refuses in a folder (a value that is not a number, a value too long) is a refusal of
/// the folder, naming table and row, exit 5, and nothing of it is applied: strict mode, no silent
/// truncation.
#[test]
fn mariadb_refuses_a_bad_number_and_a_too_long_value_instead_of_truncating() {
    for (tag, edit, needle) in [
        ("my-badnum", "2,not-a-number,1,x,,,,", "not-a-number"),
        (
            "my-toolong",
            &*format!("2,1,1,{},,,,", "x".repeat(300)),
            "dim_attribute_1",
        ),
    ] {
        let (w, _, folder) = one_folder(tag);
        set_dim_rows(&folder, &format!("1,1,1,ok,,,,\n{edit}\n"));
        let my = MyDb::new(tag);
        let o = w.run_code(
            &mut w.command(&["load", "--input", "out", "--target", &my.url()]),
            5,
        );
        let err = stderr(&o);
        assert!(
            err.contains("user_data_cust_dim_1") && err.contains(needle) && err.contains("line 3"),
            "{tag}: {err}"
        );
        assert_eq!(
            query_one(&my.url(), "SELECT COUNT(*) FROM gim_export_ledger"),
            "0"
        );
        assert_eq!(
            query_one(&my.url(), "SELECT COUNT(*) FROM interaction_fact"),
            "0"
        );
    }
}

/// NULL and empty text, quotes, commas, newlines, backslashes and non-ASCII text arrive as they left;
/// a key given twice in one folder keeps its last line.
#[test]
fn mariadb_reads_the_csv_as_the_other_targets_do_and_keeps_the_last_line_of_a_repeated_key() {
    let (w, _, folder) = one_folder("my-csv");
    set_dim_rows(
        &folder,
        "1,1,1,first,,,,\n2,1,1,\"say \"\"hi\"\", then\r\nbye\",back\\slash,O'Brien,Ünïcödé 😀,\n1,1,1,second,,,,\n",
    );
    let (my, pg) = (MyDb::new("csv"), PgDb::new("my_csv_ref"));
    for t in [my.url(), pg.url()] {
        w.run(&["load", "--input", "out", "--target", &t]);
    }
    let rows = dump_table(&my.url(), "user_data_cust_dim_1");
    assert_eq!(rows, dump_table(&pg.url(), "user_data_cust_dim_1"));
    assert_eq!(rows[0][3], "second");
    assert_eq!(rows[1][3], "say \"hi\", then\r\nbye");
    assert_eq!(rows[1][4..7], ["back\\slash", "O'Brien", "Ünïcödé 😀"]);
}

/// A custom user-data table the model does not have is created from its CSV header, on MariaDB too.
#[test]
fn a_custom_user_data_table_is_created_on_mariadb_from_its_header() {
    let (w, _, folder) = one_folder("my-custom");
    crate::tamper::rewrite(&folder, crate::tamper::Fix::All, |entries| {
        let (_, bytes) = entries
            .iter()
            .find(|(n, _)| n == "user_data_cust_dim_1.csv")
            .unwrap()
            .clone();
        entries.push(("user_data_cust_dim_2.csv".into(), bytes));
    });
    let my = MyDb::new("custom");
    w.run(&["load", "--input", "out", "--target", &my.url()]);
    assert_eq!(
        dump_table(&my.url(), "user_data_cust_dim_2"),
        dump_table(&my.url(), "user_data_cust_dim_1")
    );
    let origin = query_one(
        &my.url(),
        "SELECT origin FROM gim_export_catalog WHERE table_name = 'user_data_cust_dim_2' AND column_name = ''",
    );
    assert_eq!(origin, "header");
}

/// Killed at many points, the MariaDB load holds whole exports only, and the rerun finishes the job.
#[test]
fn a_mariadb_load_killed_at_many_points_keeps_whole_exports() {
    let w = Workdir::new("my-crash");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 3, 200, 23);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let folders = export_folders(&w.join("out"));
    let reference = MyDb::new("crashref");
    let mut after = vec![];
    w.run(&["target-schema", "--target", &reference.url()]);
    after.push(dump_target(&reference.url()));
    for f in &folders {
        w.run(&[
            "load",
            "--input",
            &format!("out/{f}"),
            "--target",
            &reference.url(),
        ]);
        after.push(dump_target(&reference.url()));
    }
    let mut crashed = 0;
    for n in 1u32..=12 {
        let my = MyDb::new("crash");
        let mut cmd = w.command(&["load", "--input", "out", "--target", &my.url()]);
        cmd.env(ABORT_AFTER_ENV, n.to_string());
        let o = cmd.output().unwrap();
        if !o.status.success() {
            crashed += 1;
            let applied = dump_table(&my.url(), "gim_export_ledger").len();
            assert_eq!(
                dump_target(&my.url()),
                after[applied],
                "after abort at {n}: not whole exports"
            );
        }
        w.run_code(
            &mut w.command(&["load", "--input", "out", "--target", &my.url()]),
            if dump_table(&my.url(), "gim_export_ledger").len() == folders.len() {
                3 // killed after the last commit: nothing left to do
            } else {
                0
            },
        );
        assert_eq!(
            &dump_target(&my.url()),
            after.last().unwrap(),
            "rerun after abort at {n}"
        );
    }
    assert!(
        crashed >= 6,
        "only {crashed} runs reached their abort point"
    );
}

/// A second loader on the same MariaDB database is refused with exit 4 while the first holds the lock.
#[test]
fn a_second_loader_on_mariadb_is_refused_with_exit_4() {
    let w = Workdir::new("my-lock");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 1, 60, 2);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let my = MyDb::new("lock");
    let mut holder = Command::new("mysql")
        .args(["-h", "127.0.0.1", "-P", "3306", "-u", "root", &my.name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the mysql client (make test installs it)");
    holder
        .stdin
        .as_mut()
        .unwrap()
        .write_all(format!("SELECT GET_LOCK('gim-export-load:{}', 10);\n", my.name).as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while query_one(
        &my.url(),
        &format!(
            "SELECT IS_USED_LOCK('gim-export-load:{}') IS NOT NULL",
            my.name
        ),
    ) != "1"
    {
        assert!(
            Instant::now() < deadline,
            "the lock holder never took the lock"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = w.run_code(
        &mut w.command(&["load", "--input", "out", "--target", &my.url()]),
        4,
    );
    assert!(
        stderr(&o).contains("another gim-export load"),
        "{}",
        stderr(&o)
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
    w.run(&["load", "--input", "out", "--target", &my.url()]);
}

/// MariaDB commits at every CREATE TABLE, so a folder's new table cannot share its transaction: when
/// the folder is then refused, the loader takes the table and its catalog rows back, and the target
/// is as before, table for table (mysqldump); the corrected folder then loads.
#[test]
fn a_refused_folder_leaves_no_new_table_behind_on_mariadb() {
    let (w, _, folder) = one_folder("my-undo");
    let pristine = w.join("pristine");
    copy_dir(&folder, &pristine);
    crate::tamper::rewrite(&folder, crate::tamper::Fix::All, |entries| {
        let header = {
            let (_, b) = entries
                .iter()
                .find(|(n, _)| n == "user_data_cust_dim_1.csv")
                .unwrap();
            std::str::from_utf8(b)
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .to_string()
        };
        entries.push((
            "user_data_cust_dim_2.csv".into(),
            format!("{header}\n1,1,1,ok,,,,\n2,x,1,bad,,,,\n").into_bytes(),
        ));
    });
    let my = MyDb::new("undo");
    w.run(&["target-schema", "--target", &my.url()]);
    let before = my.dump();
    let o = w.run_code(
        &mut w.command(&["load", "--input", "out", "--target", &my.url()]),
        5,
    );
    assert!(
        stderr(&o).contains("user_data_cust_dim_2"),
        "{}",
        stderr(&o)
    );
    assert!(
        my.dump() == before,
        "the refused folder left a change behind"
    );
    std::fs::remove_dir_all(&folder).unwrap();
    copy_dir(&pristine, &folder);
    w.run(&["load", "--input", "out", "--target", &my.url()]);
}

/// An older MariaDB target (made before the history of applications and a model column existed) is
/// brought up to date by the next load, which says what it changed, and then holds what a new one
/// holds.
#[test]
fn an_older_mariadb_target_is_migrated_by_the_next_load() {
    let w = Workdir::new("my-migrate");
    let src = w.sqlite_url("im.db");
    simulate(&w, &src, 2, 100, 13);
    w.run(&["export", "--source", &src, "--output", "out", "--catch-up"]);
    let folders = export_folders(&w.join("out"));
    let (old, fresh) = (MyDb::new("migrate_old"), MyDb::new("migrate_new"));
    w.run(&[
        "load",
        "--input",
        &format!("out/{}", folders[0]),
        "--target",
        &old.url(),
    ]);
    exec_sql(
        &old.url(),
        "DROP TABLE gim_export_applied; ALTER TABLE interaction_fact DROP COLUMN subject; \
         ALTER TABLE gim_export_ledger DROP COLUMN removed_counts",
    );
    let o = w.run(&["load", "--input", "out", "--target", &old.url()]);
    let said = stdout(&o);
    for change in [
        "created 1 table(s) of the GIM model: gim_export_applied",
        "added column interaction_fact.subject",
        "added column gim_export_ledger.removed_counts",
    ] {
        assert!(said.contains(change), "{change}: {said}");
    }
    w.run(&["load", "--input", "out", "--target", &fresh.url()]);
    let tables = |db: &MyDb| {
        query_rows(
            &db.url(),
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1, 2",
        )
    };
    assert_eq!(tables(&old), tables(&fresh));
    // The rows loaded before the migration lack the column that was gone; every later row matches.
    let count = |db: &MyDb, sql: &str| query_one(&db.url(), sql);
    for sql in [
        "SELECT COUNT(*) FROM interaction_fact",
        "SELECT COUNT(*) FROM gim_export_ledger",
        "SELECT COUNT(*) FROM interaction_resource_fact",
    ] {
        assert_eq!(count(&old, sql), count(&fresh, sql), "{sql}");
    }
}

/// A MariaDB exporter needs SELECT and nothing else: a user with only that right exports the same
/// bytes as root.
#[test]
fn a_select_only_mariadb_user_exports_the_same_bytes() {
    let w = Workdir::new("my-readonly");
    let my = MyDb::new("readonly");
    simulate(&w, &my.url(), 1, 100, 31);
    let user = format!("gx_ro_{}", std::process::id());
    let server = "mysql://root@127.0.0.1:3306/mysql";
    my_rows(server, &format!("DROP USER IF EXISTS '{user}'@'%'"));
    my_rows(
        server,
        &format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'"),
    );
    my_rows(
        server,
        &format!("GRANT SELECT ON {}.* TO '{user}'@'%'", my.name),
    );
    let reader = format!("mysql://{user}:pw@127.0.0.1:3306/{}", my.name);
    let o = w
        .command(&[
            "export",
            "--source",
            &reader,
            "--output",
            "ro",
            "--catch-up",
        ])
        .output();
    my_rows(server, &format!("DROP USER IF EXISTS '{user}'@'%'"));
    let o = o.unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    w.run(&[
        "export",
        "--source",
        &my.url(),
        "--output",
        "root",
        "--catch-up",
    ]);
    let folders = |d: &str| {
        tree(&w.join(d))
            .into_iter()
            .filter(|(k, _)| k.starts_with("export_"))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let ro = folders("ro");
    assert!(ro.len() >= 3, "{:?}", ro.keys());
    assert_same_tree(&ro, &folders("root"), "read-only and root exports");
}

/// Issue 19 on MariaDB: a 200-table folder paid a stage, a LOAD DATA and a merge per table. Small
/// tables now go in one batch of INSERT ... ON DUPLICATE KEY UPDATE; it must give what the staged
/// path and the other targets give (quotes, commas, newlines, backslashes, apostrophes, NULL).
#[test]
fn small_tables_go_to_mariadb_in_one_batch_with_the_same_rows_as_postgres() {
    let (w, _, folder) = one_folder("my-batch");
    set_dim_rows(
        &folder,
        "1,1,1,\"\",,\"say \"\"hi\"\", then\nbye\",,\n2,1,1,O'Brien,back\\slash,\"a,b\",,\n",
    );
    let (my, pg) = (MyDb::new("batch"), PgDb::new("my_batch_ref"));
    let o = w.run_code(
        w.command(&["load", "--input", "out", "--target", &my.url()])
            .env("GIM_EXPORT_LOG", "debug"),
        0,
    );
    assert!(
        stderr(&o).contains("small table(s) merged in one batch"),
        "the batch was not taken: {}",
        stderr(&o)
    );
    w.run(&["load", "--input", "out", "--target", &pg.url()]);
    assert_eq!(dump_target(&my.url()), dump_target(&pg.url()));
    // The folder was altered by hand, so compare says so: its rows are what it loaded.
    let o = w.run_code(
        &mut w.command(&[
            "compare",
            "--source",
            &w.sqlite_url("im.db"),
            "--target",
            &my.url(),
        ]),
        5,
    );
    assert!(
        stdout(&o).contains("user_data_cust_dim_1"),
        "{}",
        stdout(&o)
    );
}
