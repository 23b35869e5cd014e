//! `strata verify`: checks every checksum of the log without opening the store, so it
//! works on a store another process has open.

use std::io::{self, Write};
use std::path::Path;

use clap::Args;
use indicatif::HumanBytes;
use strata::engine::io::{DirStorage, Storage};
use strata::engine::verify;

use crate::error::{output_error, CliError};
use crate::output::progress_bar;

/// Options of `strata verify`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 when the log is intact (a torn tail, an interrupted \
last write that was never acknowledged, is only noted), 2 when damage is found, 1 when the \
check itself fails."
)]
pub struct VerifyArgs {}

/// Runs `strata verify`.
pub async fn run(data_dir: &Path, _args: VerifyArgs) -> Result<(), CliError> {
    if !data_dir.is_dir() {
        return Err(CliError::NoStore {
            path: data_dir.to_path_buf(),
        });
    }
    let storage = DirStorage::new(data_dir)
        .map_err(|e| CliError::io(format!("cannot open {}", data_dir.display()), e))?;
    let in_use = held_by_another_process(data_dir, &storage);
    let bar = progress_bar(Some(0), true, "verifying");
    let progress = bar.clone();
    let report = tokio::task::spawn_blocking(move || {
        verify(&storage, |done, total| {
            progress.set_length(total);
            progress.set_position(done);
        })
    })
    .await
    .map_err(|e| CliError::io("the check stopped", io::Error::other(e)))??;
    bar.finish_and_clear();

    let mut out = io::stdout().lock();
    let summary = format!(
        "checked {} segment(s), {} table(s), {} frame(s), {} event(s), {} ({} bytes)\n",
        report.segments,
        report.tables,
        report.frames,
        report.events,
        HumanBytes(report.bytes),
        report.bytes
    );
    out.write_all(summary.as_bytes()).map_err(output_error)?;
    if in_use {
        writeln!(
            out,
            "note: another process has the store open; the end of the log may be moving while \
             it is checked, and a write in progress shows as a torn tail"
        )
        .map_err(output_error)?;
    }
    if let Some(tail) = &report.torn_tail {
        writeln!(
            out,
            "note: torn tail in {} at offset {}: {} bytes ({}); an interrupted write that was \
             never acknowledged, cut off when the store is next opened",
            tail.file, tail.offset, tail.bytes, tail.reason
        )
        .map_err(output_error)?;
    }
    if report.is_ok() {
        writeln!(out, "ok: no damage found").map_err(output_error)?;
        return out.flush().map_err(output_error);
    }
    out.flush().map_err(output_error)?;
    for error in &report.errors {
        eprintln!("damage: {error}");
    }
    Err(CliError::Corrupt {
        count: report.errors.len(),
    })
}

/// Whether another process holds the store's lock. Takes the lock only for a moment
/// (and only if the lock file exists, so that nothing is created).
fn held_by_another_process(data_dir: &Path, storage: &DirStorage) -> bool {
    if !data_dir.join("LOCK").exists() {
        return false;
    }
    match storage.lock() {
        Ok(guard) => {
            drop(guard);
            false
        }
        Err(error) => error.kind() == io::ErrorKind::WouldBlock,
    }
}
