//! End-to-end tests of the `strata` binary, run against temporary directories.
#![allow(clippy::unwrap_used)] // a test panics on a failed expectation

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata::{ExpectedRevision, Store};

/// A `strata` command on the store in `data`.
fn strata(data: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command.env_remove("STRATA_DATA").arg("--data").arg(data);
    command
}

fn run(data: &Path, args: &[&str]) -> Output {
    strata(data).args(args).output().expect("run strata")
}

fn run_with_stdin(data: &Path, args: &[&str], input: &str) -> Output {
    let mut child = strata(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for strata")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs and expects success; returns stdout.
fn ok(data: &Path, args: &[&str]) -> String {
    let output = run(data, args);
    assert!(
        output.status.success(),
        "strata {args:?} failed: {}",
        stderr(&output)
    );
    stdout(&output)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

fn store_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("store");
    (dir, data)
}

/// Waits for `child` to exit, killing it after `seconds`.
fn wait_timeout(child: &mut Child, seconds: u64) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("strata did not exit within {seconds} s");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The lines of a child's stdout, as they come.
fn lines_of(out: ChildStdout) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Polls until opening the store fails because another process holds it; returns the
/// error message.
fn wait_until_locked(data: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = run(data, &["stats"]);
        if !output.status.success() && stderr(&output).contains("already open") {
            return stderr(&output);
        }
        assert!(
            Instant::now() < deadline,
            "the store never became locked: {}",
            stderr(&output)
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn append_from_arguments_and_stdin_then_read_json_and_table() {
    let (_dir, data) = store_dir();
    let result = json_lines(&ok(
        &data,
        &[
            "append",
            "order-1",
            "--type",
            "Placed",
            r#"{"total":42}"#,
            "[1,2]",
        ],
    ));
    assert_eq!(result[0]["stream"], "order-1");
    assert_eq!(result[0]["revisions"], serde_json::json!([0, 1]));
    assert_eq!(result[0]["positions"], serde_json::json!([0, 1]));

    let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let input = format!(
        "{{\"type\":\"Paid\",\"data\":{{\"amount\":42}},\"metadata\":{{\"by\":\"me\"}},\"id\":\"{id}\"}}\n\
         \n\
         {{\"event_type\":\"Shipped\",\"data\":\"parcel\"}}\n"
    );
    let output = run_with_stdin(
        &data,
        &["append", "order-1", "--expected", "1", "--file", "-"],
        &input,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let result = json_lines(&stdout(&output));
    assert_eq!(result[0]["first_revision"], 2);
    assert_eq!(result[0]["last_revision"], 3);

    let events = json_lines(&ok(&data, &["read", "order-1"]));
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["type"], "Placed");
    assert_eq!(events[0]["data"]["total"], 42);
    assert_eq!(events[1]["data"], serde_json::json!([1, 2]));
    assert_eq!(events[2]["id"], id);
    assert_eq!(events[2]["metadata"]["by"], "me");
    assert_eq!(events[3]["data"], "parcel");
    assert_eq!(events[3]["revision"], 3);
    assert!(events[3]["recorded_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    let backwards = json_lines(&ok(
        &data,
        &["read", "order-1", "--backwards", "--limit", "2"],
    ));
    let revisions: Vec<_> = backwards.iter().map(|e| e["revision"].clone()).collect();
    assert_eq!(revisions, vec![3, 2]);
    let from = json_lines(&ok(
        &data,
        &["read", "order-1", "--from", "1", "--limit", "2"],
    ));
    let revisions: Vec<_> = from.iter().map(|e| e["revision"].clone()).collect();
    assert_eq!(revisions, vec![1, 2]);

    let table = ok(&data, &["read", "order-1", "--format", "table"]);
    let lines: Vec<_> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[0].starts_with("POSITION"));
    assert!(lines[0].contains("RECORDED_AT"));
    assert!(lines[1].contains("order-1") && lines[1].contains("Placed"));
    let data_column = lines[0].find("DATA").expect("DATA column");
    assert_eq!(&lines[1][data_column..], r#"{"total":42}"#);
}

#[test]
fn long_data_is_cut_in_tables() {
    let (_dir, data) = store_dir();
    let long = format!("\"{}\"", "x".repeat(200));
    ok(&data, &["append", "s", "--type", "T", &long]);
    let table = ok(&data, &["read", "s", "--format", "table"]);
    let row = table.lines().nth(1).expect("a row");
    assert!(row.ends_with('…'), "{row}");
    assert!(row.chars().count() < 150, "{row}");
}

#[test]
fn read_all_with_filters() {
    let (_dir, data) = store_dir();
    ok(&data, &["append", "order-1", "--type", "Placed", "{}"]);
    ok(&data, &["append", "invoice-1", "--type", "Sent", "{}"]);
    ok(
        &data,
        &["append", "order-2", "--type", "Placed", "{}", "{}"],
    );

    let all = json_lines(&ok(&data, &["read", "$all"]));
    assert_eq!(all.len(), 4);
    let orders = json_lines(&ok(&data, &["read", "$all", "--category", "order"]));
    let streams: Vec<_> = orders
        .iter()
        .map(|e| e["stream"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(streams, vec!["order-1", "order-2", "order-2"]);
    let newest = json_lines(&ok(&data, &["read", "$all", "--backwards", "--limit", "1"]));
    assert_eq!(newest[0]["position"], 3);
    let sent = json_lines(&ok(&data, &["read", "$all", "--type", "Sent"]));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["stream"], "invoice-1");

    let output = run(&data, &["read", "order-1", "--category", "order"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("apply only to '$all'"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn failures_exit_non_zero_with_a_clear_message() {
    let (_dir, data) = store_dir();
    ok(&data, &["append", "order-1", "--type", "Placed", "{}"]);

    let output = run(
        &data,
        &[
            "append",
            "order-1",
            "--expected",
            "no-stream",
            "--type",
            "X",
            "{}",
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.starts_with("error: wrong expected revision"),
        "{message}"
    );
    assert!(
        message.contains("order-1") && message.contains("actual 0"),
        "{message}"
    );

    let output = run(
        &data,
        &["append", "order-1", "--expected", "5", "--type", "X", "{}"],
    );
    assert!(
        stderr(&output).contains("expected 5, actual 0"),
        "{}",
        stderr(&output)
    );

    let output = run(&data, &["append", "order-1", "--type", "X", "not json"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("is not valid JSON"),
        "{}",
        stderr(&output)
    );

    let output = run(&data, &["append", "order-1", "{}"]);
    assert!(
        stderr(&output).contains("--type is required"),
        "{}",
        stderr(&output)
    );

    let output = run(
        &data,
        &[
            "append",
            "order-1",
            "--expected",
            "maybe",
            "--type",
            "X",
            "{}",
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(2),
        "clap usage errors exit with 2"
    );
    assert!(stderr(&output).contains("not an expected revision"));

    let output = run_with_stdin(
        &data,
        &["append", "order-1", "--file", "-"],
        "{\"type\":\"A\",\"data\":1}\n{\"type\":\n",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("stdin line 2"),
        "{}",
        stderr(&output)
    );

    let output = run(&data, &["append", "$all", "--type", "X", "{}"]);
    assert!(stderr(&output).contains("reserved"), "{}", stderr(&output));

    let output = run(&data, &["read", "nothing-here"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("not found"));

    let missing = data.with_file_name("missing");
    let output = run(&missing, &["read", "$all"]);
    assert!(
        stderr(&output).contains("no store at"),
        "{}",
        stderr(&output)
    );
    assert!(!missing.exists(), "reading must not create a store");
}

#[test]
fn streams_and_stats() {
    let (_dir, data) = store_dir();
    ok(
        &data,
        &["append", "order-1", "--type", "Placed", "{}", "{}"],
    );
    ok(&data, &["append", "invoice-1", "--type", "Sent", "{}"]);
    ok(
        &data,
        &[
            "append",
            "$$order-1",
            "--type",
            "$metadata",
            r#"{"$maxCount":1}"#,
        ],
    );

    let table = ok(&data, &["streams"]);
    let lines: Vec<_> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[1].starts_with("invoice-1"));
    assert!(lines[2].starts_with("order-1"));

    let listed = json_lines(&ok(&data, &["streams", "--format", "json", "--all"]));
    let names: Vec<_> = listed
        .iter()
        .map(|s| s["stream"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, vec!["$$order-1", "invoice-1", "order-1"]);
    assert_eq!(listed[2]["last_revision"], 1);
    assert_eq!(listed[2]["visible_events"], 1);
    let prefixed = json_lines(&ok(
        &data,
        &["streams", "--format", "json", "--prefix", "ord"],
    ));
    assert_eq!(prefixed.len(), 1);

    let stats = json_lines(&ok(&data, &["stats", "--json"]));
    assert_eq!(stats[0]["events"], 4);
    assert_eq!(stats[0]["streams"], 3);
    assert_eq!(stats[0]["head"], 3);
    assert_eq!(stats[0]["segments"], 1);
    assert!(stats[0]["disk_bytes"].as_u64().is_some_and(|b| b > 64));
    let text = ok(&data, &["stats"]);
    assert!(text.contains("events:    4"), "{text}");
    assert!(text.contains("bytes)"), "{text}");
    // Only `strata serve` scrubs: a store opened for one command says so.
    assert!(text.contains("\nscrub:     not running"), "{text}");
    assert_eq!(stats[0]["scrub"], Value::Null);
}

#[test]
fn verify_passes_on_a_good_store_and_exits_2_on_a_flipped_byte() {
    let (_dir, data) = store_dir();
    let big = format!("\"{}\"", "a".repeat(300));
    ok(&data, &["append", "s-1", "--type", "T", &big]);
    ok(&data, &["append", "s-1", "--type", "T", "{}", "{}"]);

    let output = run(&data, &["verify"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("3 event(s)"),
        "{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains("ok: no damage found"));

    let segment = data.join("0000000001.seg");
    let mut bytes = std::fs::read(&segment).expect("read segment");
    // Past the 64-byte segment header and the 40-byte frame header: inside the first
    // frame's record, which a later frame follows.
    bytes[64 + 40 + 100] ^= 0x20;
    std::fs::write(&segment, &bytes).expect("write segment");

    let output = run(&data, &["verify"]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    let message = stderr(&output);
    assert!(
        message.contains("damage: corrupt data in 0000000001.seg"),
        "{message}"
    );
    assert!(
        message.contains("error: verify found 1 problem(s)"),
        "{message}"
    );
}

#[test]
fn export_then_import_reproduces_the_log_and_importing_again_is_idempotent() {
    let (dir, data) = store_dir();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    ok(
        &data,
        &[
            "append",
            "order-1",
            "--type",
            "Placed",
            r#"{"b":1,"a":2}"#,
            "null",
        ],
    );
    ok(
        &data,
        &[
            "append",
            "order-1",
            "--type",
            "Note",
            "--metadata",
            r#"{"by":"me"}"#,
            "{\n  \"pretty\": true\n}",
        ],
    );
    ok(
        &data,
        &[
            "append",
            "$$order-1",
            "--type",
            "$metadata",
            r#"{"$maxCount":10}"#,
        ],
    );
    run_with_stdin(
        &data,
        &["append", "blob-1", "--file", "-"],
        "{\"type\":\"Bin\",\"data_base64\":\"AAEC/w==\"}\n",
    );
    // Soft delete, then revive (the store writes metadata events of its own).
    runtime.block_on(async {
        let store = Store::open(&data).expect("open");
        store
            .delete_stream("order-1", ExpectedRevision::Any)
            .await
            .expect("delete");
        store.close().await.expect("close");
    });
    ok(&data, &["append", "order-1", "--type", "Revived", "{}"]);
    ok(
        &data,
        &["append", "cart-1", "--type", "Added", r#"{"sku":"x"}"#],
    );
    runtime.block_on(async {
        let store = Store::open(&data).expect("open");
        store
            .tombstone_stream("cart-1", ExpectedRevision::Any)
            .await
            .expect("tombstone");
        store.close().await.expect("close");
    });

    let export = dir.path().join("export.jsonl");
    let export_arg = export.to_str().expect("utf-8 path");
    ok(&data, &["export", "--output", export_arg]);
    let exported = std::fs::read_to_string(&export).expect("read export");
    let lines = json_lines(&exported);
    assert_eq!(lines.len(), 10, "{exported}");
    assert!(lines.iter().any(|e| e["type"] == "$streamDeleted"));
    assert!(lines.iter().any(|e| e["stream"] == "$$order-1"));
    // Multi-line JSON is kept byte for byte, as base64.
    assert!(lines
        .iter()
        .any(|e| e["type"] == "Note" && e["data_base64"].is_string()));

    let copy = dir.path().join("copy");
    let output = run(&copy, &["import", "--input", export_arg]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("imported 10 events: 10 written, 0 already present"),
        "{}",
        stdout(&output)
    );

    let original = json_lines(&ok(&data, &["read", "$all"]));
    let copied = json_lines(&ok(&copy, &["read", "$all"]));
    assert_eq!(original.len(), copied.len());
    for (a, b) in original.iter().zip(&copied) {
        if a["type"] == "$streamDeleted" {
            // A tombstone is written anew: same place, new id and time.
            for key in ["stream", "revision", "position", "type"] {
                assert_eq!(a[key], b[key]);
            }
        } else {
            assert_eq!(a, b);
        }
    }
    assert_eq!(
        ok(&data, &["read", "order-1"]),
        ok(&copy, &["read", "order-1"])
    );
    let tombstoned = run(&copy, &["read", "cart-1"]);
    assert!(stderr(&tombstoned).contains("deleted permanently"));

    let output = run(&copy, &["import", "--input", export_arg]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("0 written"), "{}", stdout(&output));
    let events = |dir: &Path| json_lines(&ok(dir, &["stats", "--json"]))[0]["events"].clone();
    assert_eq!(events(&copy), events(&data));
    assert_eq!(ok(&copy, &["export"]).lines().count(), 10);

    // Byte-exact data: the export of the copy equals the export of the original, but
    // for the tombstone.
    let again = json_lines(&ok(&copy, &["export"]));
    for (a, b) in lines.iter().zip(&again) {
        if a["type"] != "$streamDeleted" {
            assert_eq!(a, b);
        }
    }
}

#[test]
fn tail_prints_history_then_holds_the_store_until_ctrl_c() {
    let (_dir, data) = store_dir();
    ok(
        &data,
        &["append", "order-1", "--type", "Placed", "{}", "{}"],
    );
    ok(&data, &["append", "invoice-1", "--type", "Sent", "{}"]);

    let events = json_lines(&ok(
        &data,
        &["tail", "order-1", "--from-start", "--count", "2"],
    ));
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["revision"], 1);
    let events = json_lines(&ok(
        &data,
        &[
            "tail",
            "$all",
            "--from-start",
            "--count",
            "1",
            "--category",
            "invoice",
        ],
    ));
    assert_eq!(events[0]["stream"], "invoice-1");

    let mut tail = strata(&data)
        .args(["tail", "$all", "--from-start"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tail");
    let lines = lines_of(tail.stdout.take().expect("stdout"));
    for _ in 0..3 {
        lines
            .recv_timeout(Duration::from_secs(10))
            .expect("tail prints the history");
    }
    let message = wait_until_locked(&data);
    assert!(message.starts_with("error: the store at"), "{message}");
    assert!(
        message.contains("is already open in another process"),
        "{message}"
    );
    let output = run(&data, &["append", "order-1", "--type", "X", "{}"]);
    assert!(stderr(&output).contains("already open"));

    let killed = Command::new("kill")
        .args(["-INT", &tail.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = wait_timeout(&mut tail, 10);
    assert!(status.success(), "tail ends cleanly on Ctrl-C: {status:?}");
    // The lock is released.
    ok(&data, &["append", "order-1", "--type", "X", "{}"]);
}

#[test]
fn tail_follows_events_another_process_appends() {
    let (_dir, data) = store_dir();
    // A long-running writer: an import reading from a pipe holds the store open and
    // appends each line as it arrives.
    let mut writer = strata(&data)
        .args(["import", "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn import");
    let mut pipe = writer.stdin.take().expect("stdin");
    writeln!(pipe, r#"{{"stream":"seed-1","type":"Seed","data":{{}}}}"#).expect("write");
    pipe.flush().expect("flush");
    // Wait for the first event to reach the log (without touching the lock, which the
    // writer must get first).
    let segment = data.join("0000000001.seg");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&segment).map_or(0, |m| m.len()) <= 64 {
        assert!(Instant::now() < deadline, "the writer never wrote");
        thread::sleep(Duration::from_millis(20));
    }

    let mut tail = strata(&data)
        .args([
            "tail",
            "$all",
            "--from-start",
            "--count",
            "3",
            "--exclude-system",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tail");
    let lines = lines_of(tail.stdout.take().expect("stdout"));
    let first = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("the existing event");
    assert!(first.contains("seed-1"), "{first}");

    for i in 1..=2 {
        writeln!(
            pipe,
            r#"{{"stream":"live-{i}","type":"Live","data":{{"n":{i}}}}}"#
        )
        .expect("write to import");
        pipe.flush().expect("flush");
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("tail shows the live event");
        let event: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(event["stream"], format!("live-{i}"));
        assert_eq!(event["data"]["n"], i);
    }
    let status = wait_timeout(&mut tail, 10);
    assert!(status.success(), "tail stops after --count events");

    drop(pipe);
    let status = wait_timeout(&mut writer, 10);
    assert!(status.success());
    assert_eq!(json_lines(&ok(&data, &["read", "$all"])).len(), 3);
}

#[test]
fn serve_starts_refuses_a_second_instance_and_stops_cleanly_on_sigterm() {
    use std::io::Read;
    let (_dir, data) = store_dir();
    ok(&data, &["append", "order-1", "--type", "Placed", "{}"]);
    let mut server = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--data", data.to_str().unwrap(), "serve"])
        .args(["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut http = None;
    let mut grpc = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("gRPC listening on ").nth(1) {
            grpc = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(rest) = line.split("HTTP listening on http://").nth(1) {
            http = Some(rest.trim().to_owned());
            break;
        }
    }
    let (http, grpc) = (
        http.expect("HTTP address logged"),
        grpc.expect("gRPC address logged"),
    );
    assert!(!grpc.ends_with(":0"), "the real port is logged: {grpc}");

    let mut stream = std::net::TcpStream::connect(&http).unwrap();
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // A second server on the same directory is refused with a clear message.
    let second = run(
        &data,
        &["serve", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"],
    );
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("already open in another process"),
        "{}",
        stderr(&second)
    );

    // SIGTERM: a clean stop with exit code 0, and the store opens without repairs.
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_timeout(&mut server, 20);
    assert!(status.success(), "exit status {status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("stopped cleanly")),
        "{rest:?}"
    );
    assert_eq!(json_lines(&ok(&data, &["read", "order-1"])).len(), 1);
}

#[test]
fn bench_runs_every_measurement_and_cleans_up() {
    let (dir, data) = store_dir();
    let scratch = dir.path().join("scratch");
    let results = dir.path().join("bench.json");
    let output = run(
        &data,
        &[
            "bench",
            "--quick",
            "--seconds",
            "0.2",
            "--events",
            "5000",
            "--dir",
            scratch.to_str().unwrap(),
            "--output",
            results.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    for figure in [
        "fdatasync",
        "256 writers",
        "100 events of 200 B",
        "global log read",
        "open after a crash",
        "aggregate load",
        "one hot aggregate",
        "gRPC Append",
        "HTTP POST",
    ] {
        assert!(printed.contains(figure), "missing {figure}: {printed}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    let figures = json.as_array().unwrap();
    assert!(figures.len() >= 12);
    // Rates must be positive; latencies may be 0 µs (an embedded subscriber can see an
    // event before its writer sees the acknowledgement).
    assert!(
        figures.iter().all(|f| {
            let value = f["value"].as_f64().unwrap();
            let rate = f["unit"].as_str().unwrap().ends_with("/s");
            value.is_finite() && if rate { value > 0.0 } else { value >= 0.0 }
        }),
        "{json}"
    );
    assert!(!scratch.exists(), "the scratch directory is removed");
}

#[test]
fn bench_scale_compares_with_sqlite_and_cleans_up() {
    let (dir, data) = store_dir();
    let scratch = dir.path().join("scratch");
    let results = dir.path().join("scale.json");
    let output = run(
        &data,
        &[
            "bench",
            "--only",
            "scale",
            "--streams",
            "200",
            "--events",
            "1000",
            "--dir",
            scratch.to_str().unwrap(),
            "--output",
            results.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    assert!(printed.contains("strata/SQLite"), "{printed}");
    let json: Value = serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    let figures = json.as_array().unwrap();
    let value = |name: &str| {
        figures
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("missing {name}: {json}"))["value"]
            .as_f64()
            .unwrap()
    };
    for engine in ["strata", "sqlite"] {
        for figure in [
            "load (set-up: batches of 1 000; strata NoSync)",
            "disk per event",
            "open after a clean shutdown",
            "RSS right after open",
            "peak RSS during open",
            "peak RSS during reads and appends",
            "random stream read (up to 10 events), p50",
            "random stream read (up to 10 events), p99",
            "durable 1-event appends, loaded store",
            "durable 1-event appends, empty store",
            "  loaded / empty",
            "open after SIGKILL mid-append",
        ] {
            let v = value(&format!("scale {engine}: {figure}"));
            assert!(v.is_finite() && v > 0.0, "{engine}: {figure} = {v}");
        }
        // Sane, not timed: a process holds at least a MiB, and the events (~100 B of
        // JSON each) take room on disk.
        assert!(value(&format!("scale {engine}: RSS right after open")) >= 1.0);
        assert!(value(&format!("scale {engine}: disk per event")) >= 100.0);
        assert!(
            value(&format!(
                "scale {engine}: random stream read (up to 10 events), p99"
            )) >= value(&format!(
                "scale {engine}: random stream read (up to 10 events), p50"
            ))
        );
    }
    assert!(!scratch.exists(), "the scratch directory is removed");
}

#[test]
fn bench_scale_refuses_streams_without_events() {
    let (dir, data) = store_dir();
    let scratch = dir.path().join("scratch");
    let output = run(
        &data,
        &[
            "bench",
            "--only",
            "scale",
            "--streams",
            "100",
            "--events",
            "10",
            "--dir",
            scratch.to_str().unwrap(),
        ],
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("at least one event per stream"));
}

#[test]
fn every_subcommand_has_help() {
    let (_dir, data) = store_dir();
    for command in [
        "append", "read", "tail", "streams", "stats", "verify", "export", "import", "bench",
        "serve", "certs",
    ] {
        let help = ok(&data, &[command, "--help"]);
        assert!(help.contains("Usage: strata"), "{command}: {help}");
        assert!(help.contains("--data <DIR>"), "{command}: {help}");
    }
    let help = ok(&data, &["--help"]);
    assert!(help.contains("export"));
}

#[test]
fn commands_work_against_postgres() {
    let url = strata_postgres::cluster::shared().expect("PostgreSQL is needed for this test");
    let database = format!("cli_{}", std::process::id());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .unwrap();
    });
    let url = url.replace("/postgres", &format!("/{database}"));
    let (_dir, data) = store_dir();
    let with_pg = |args: &[&str]| {
        let mut all = vec!["--postgres", url.as_str()];
        all.extend_from_slice(args);
        ok(&data, &all)
    };
    with_pg(&[
        "append",
        "order-1",
        "--type",
        "Placed",
        r#"{"total": 5}"#,
        r#"{"total": 6}"#,
    ]);
    let events = json_lines(&with_pg(&["read", "order-1"]));
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["data"]["total"], 6);
    assert_eq!(events[0]["type"], "Placed");
    let all = json_lines(&with_pg(&["read", "$all", "--category", "order"]));
    assert_eq!(all.len(), 2);
    assert!(with_pg(&["stats"]).contains("postgres"));
    assert!(with_pg(&["streams"]).contains("order-1"));
    assert!(!data.exists(), "no embedded store was created");
}

/// Starts `strata serve` over `data` on free loopback ports; returns the process and
/// the HTTP API's URL.
fn serve(data: &Path) -> (Child, String) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--data", data.to_str().unwrap(), "serve"])
        .args(["--no-grpc", "--http", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut sender = Some(sender);
        // Keep draining stderr so the server never blocks on a full pipe.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("HTTP listening on ").nth(1) {
                if let Some(sender) = sender.take() {
                    let _ = sender.send(rest.trim().to_owned());
                }
            }
        }
    });
    let url = receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("the server logs its HTTP address");
    (server, url)
}

/// Stops a server with SIGTERM and expects a clean exit.
fn stop(mut server: Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(wait_timeout(&mut server, 20).success());
}

#[test]
fn commands_work_against_a_server_with_the_same_output() {
    let (_dir, data) = store_dir();
    // Every command below goes to the server; the local directory is never used.
    let (_elsewhere, unused) = store_dir();
    let (server, url) = serve(&data);
    let remote = |args: &[&str]| {
        let mut all = vec!["--server", url.as_str()];
        all.extend_from_slice(args);
        run(&unused, &all)
    };
    let remote_ok = |args: &[&str]| {
        let output = remote(args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        stdout(&output)
    };

    let appended = json_lines(&remote_ok(&[
        "append",
        "order-1",
        "--type",
        "Placed",
        "--metadata",
        r#"{"actor": "ann"}"#,
        r#"{"total": 42}"#,
        r#"{"b": 1, "a": 2}"#,
    ]));
    assert_eq!(appended[0]["stream"], "order-1");
    assert_eq!(appended[0]["revisions"], serde_json::json!([0, 1]));
    assert_eq!(appended[0]["positions"], serde_json::json!([0, 1]));
    let mut child = strata(&unused)
        .args(["--server", &url, "append", "cart-7", "--file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"type\":\"Blob\",\"data_base64\":\"AAEC\"}\n")
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());

    let conflict = remote(&["append", "order-1", "-e", "no-stream", "-t", "X", "1"]);
    assert!(!conflict.status.success());
    assert!(
        stderr(&conflict).contains("wrong expected revision"),
        "{}",
        stderr(&conflict)
    );
    let missing = remote(&["read", "nope-1"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );
    let refused = remote(&["verify"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("--server works with"));

    let events = json_lines(&remote_ok(&["read", "order-1"]));
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["data"], serde_json::json!({"total": 42}));
    assert_eq!(events[0]["metadata"], serde_json::json!({"actor": "ann"}));
    let newest = json_lines(&remote_ok(&["read", "$all", "-b", "-n", "1"]));
    assert_eq!(newest[0]["stream"], "cart-7");
    assert_eq!(newest[0]["data_base64"], "AAEC");
    let orders = json_lines(&remote_ok(&["read", "$all", "--category", "order"]));
    assert_eq!(orders.len(), 2);

    // tail: history, then an event appended while it follows.
    let mut tail = strata(&unused)
        .args(["--server", &url, "tail", "$all", "--from-start", "-n", "4"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(tail.stdout.take().unwrap());
    for _ in 0..3 {
        lines
            .recv_timeout(Duration::from_secs(30))
            .expect("history");
    }
    remote_ok(&["append", "order-2", "-t", "Placed", "{}"]);
    let live: Value =
        serde_json::from_str(&lines.recv_timeout(Duration::from_secs(30)).unwrap()).unwrap();
    assert_eq!(live["stream"], "order-2");
    assert!(wait_timeout(&mut tail, 20).success());

    let stats: Value = serde_json::from_str(&remote_ok(&["stats", "--json"])).unwrap();
    assert_eq!(stats["events"], 4);
    assert_eq!(stats["head"], 3);
    let text = remote_ok(&["stats"]);
    assert!(text.contains(&url), "{text}");
    // The server scrubs (by default): its counts, and no damage in a good store.
    assert!(stats["scrub"]["passes"].is_u64(), "{stats}");
    assert_eq!(stats["scrub"]["damage_found"], 0, "{stats}");
    assert!(text.contains("\nscrub:     "), "{text}");
    assert!(text.contains("no damage found"), "{text}");

    // The same commands on the directory, once the server is gone, print the same.
    let compared: [&[&str]; 5] = [
        &["read", "$all"],
        &["read", "$all", "--format", "table"],
        &["read", "order-1", "-b", "-n", "1"],
        &["streams"],
        &["streams", "--format", "json", "--prefix", "order"],
    ];
    let through_server: Vec<String> = compared.iter().map(|args| remote_ok(args)).collect();
    stop(server);
    for (args, expected) in compared.iter().zip(through_server) {
        assert_eq!(ok(&data, args), expected, "{args:?}");
    }
    assert!(!unused.exists(), "no local store was created");
}

#[test]
fn serve_logs_json_lines_with_request_ids() {
    use std::io::Read;
    let (_dir, data) = store_dir();
    let mut server = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "--data",
            data.to_str().unwrap(),
            "--log-format",
            "json",
            "serve",
        ])
        .args(["--no-grpc", "--http", "127.0.0.1:0"])
        .args(["--slow-request-threshold", "0s"])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut http = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
        let message = event["message"].as_str().unwrap_or_default().to_owned();
        seen.push(event);
        if let Some(rest) = message.split("HTTP listening on http://").nth(1) {
            http = Some(rest.trim().to_owned());
            break;
        }
    }
    let http = http.expect("the HTTP address is logged");
    let mut stream = std::net::TcpStream::connect(&http).unwrap();
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Request-Id: trace-me-42\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(wait_timeout(&mut server, 20).success());
    for line in lines.map_while(Result::ok) {
        seen.push(
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}")),
        );
    }
    let has = |message: &str| seen.iter().any(|e| e["message"] == message);
    assert!(has("serving"), "{seen:?}");
    assert!(has("stopped: store closed"), "{seen:?}");
    // The slow-request line (threshold 0) names the request by the client's id.
    let slow = seen
        .iter()
        .find(|e| e["message"] == "slow request")
        .unwrap_or_else(|| panic!("no slow-request line: {seen:?}"));
    let text = slow.to_string();
    assert!(text.contains("trace-me-42"), "{text}");
    assert!(text.contains("/health"), "{text}");
}

#[test]
fn tail_of_a_held_store_shows_only_frames_proven_durable() {
    let (_dir, data) = store_dir();
    let mut writer = strata(&data)
        .args(["import", "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn import");
    let mut pipe = writer.stdin.take().expect("stdin");
    let segment = data.join("0000000001.seg");
    let mut write_and_wait = |n: u32| {
        let before = std::fs::metadata(&segment).map_or(0, |m| m.len());
        writeln!(pipe, r#"{{"stream":"e-{n}","type":"E","data":{{}}}}"#).expect("write");
        pipe.flush().expect("flush");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&segment).map_or(0, |m| m.len()) <= before.max(64) {
            assert!(Instant::now() < deadline, "the writer never wrote");
            thread::sleep(Duration::from_millis(20));
        }
    };
    write_and_wait(1);
    write_and_wait(2);
    // With the writer's durable-point marker, every synced event shows at once.
    let output = run(&data, &["tail", "$all", "--from-start", "--count", "2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(json_lines(&stdout(&output)).len(), 2);

    // Without the marker (a writer that keeps none), the last batch is shown only once
    // a later batch proves it was synced.
    std::fs::remove_file(data.join("durable.pos")).unwrap();
    let mut tail = strata(&data)
        .args(["tail", "$all", "--from-start", "--count", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tail");
    let lines = lines_of(tail.stdout.take().expect("stdout"));
    let first = lines.recv_timeout(Duration::from_secs(10)).expect("e-1");
    assert!(first.contains("\"e-1\""), "{first}");
    assert!(
        lines.recv_timeout(Duration::from_millis(500)).is_err(),
        "e-2 is shown before anything proves it durable"
    );
    write_and_wait(3);
    let second = lines.recv_timeout(Duration::from_secs(10)).expect("e-2");
    assert!(second.contains("\"e-2\""), "{second}");
    assert!(wait_timeout(&mut tail, 10).success());
    drop(pipe);
    assert!(wait_timeout(&mut writer, 10).success());
}
