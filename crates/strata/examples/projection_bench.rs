//! Runs the projection benchmark: `cargo run --release -p strata --example
//! projection_bench -- [events] [repeat] [scratch dir]` (default 1 000 000 events, 1 run,
//! a temporary directory).

use strata::projection::bench::{projection_benchmarks, ProjectionBenchOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let events = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let repeat = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1);
    let dir = match args.next() {
        Some(path) => tempfile::tempdir_in(path)?,
        None => tempfile::tempdir()?,
    };
    let options = ProjectionBenchOptions::new(events).repeat(repeat);
    println!(
        "building a store of {events} events in {} …",
        dir.path().display()
    );
    projection_benchmarks(dir.path(), options, |figure| {
        let mut line = format!("{:<64} {:>12.0} {}", figure.name, figure.value, figure.unit);
        if let Some((what, ratio)) = &figure.ratio {
            line.push_str(&format!("  = {ratio:.2} x {what}"));
        }
        println!("{line}");
    })
    .await?;
    Ok(())
}
