//! Fuzzing on the stable toolchain: structure-aware mutation of valid encodings with
//! `proptest`, a case budget from the environment, and a watchdog for hangs.
//!
//! Compiled for this crate's tests and, with the `fuzz` feature, for other crates'
//! tests (strata-server fuzzes its HTTP and gRPC decoders with it). `docs/fuzzing.md`
//! lists the targets; `scripts/fuzz.sh` runs long passes.
//!
//! A target takes seeds that the real encoders produced, mutates them the ways damage
//! and hostile peers do (bit flips, overwritten bytes, length fields set to extreme
//! values, truncation, insertion, deletion, duplication, splices of two seeds), mixes in
//! fully random bytes, and checks that the decoder answers every input with a value or a
//! typed error, in bounded time, with memory bounded by the input's size.
//!
//! The budget, from the environment (the first that is set wins):
//! - `STRATA_FUZZ_SECONDS=S`: run each target for `S` seconds;
//! - `STRATA_FUZZ_CASES=N` (or proptest's own `PROPTEST_CASES=N`): run `N` cases;
//! - otherwise the target's short default, so that the normal test suite stays fast.
//!
//! `STRATA_FUZZ_HANG_SECONDS` (default 10) is how long one case may run before the
//! watchdog prints it and ends the process: a hang cannot be caught inside the thread
//! that hangs.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// How much fuzzing a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// A number of cases.
    Cases(u64),
    /// A wall-clock time.
    Time(Duration),
}

impl Budget {
    /// The budget the environment asks for, or `default_cases`.
    pub fn from_env(default_cases: u64) -> Budget {
        let number = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|value| value.trim().parse::<u64>().ok())
        };
        if let Some(seconds) = number("STRATA_FUZZ_SECONDS") {
            return Budget::Time(Duration::from_secs(seconds));
        }
        match number("STRATA_FUZZ_CASES").or_else(|| number("PROPTEST_CASES")) {
            Some(cases) => Budget::Cases(cases),
            None => Budget::Cases(default_cases),
        }
    }
}

/// How long one case may run before it counts as a hang.
fn hang_limit() -> Duration {
    let seconds = std::env::var("STRATA_FUZZ_HANG_SECONDS")
        .ok()
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or(10);
    Duration::from_secs(seconds.max(1))
}

/// Cases per proptest run: a time budget runs batches of this many until time is up.
const BATCH_CASES: u64 = 2_000;

/// The case in progress, for the watchdog: when it started and what it is.
type Current<V> = Arc<Mutex<Option<(Instant, V)>>>;

/// Runs the target `name`: `check` on values of `strategy`, within the budget the
/// environment sets (else `default_cases`). A failing case (an `Err` or a panic) is
/// shrunk and the test panics with it; a case that runs past the hang limit is printed
/// and the process exits.
pub fn run<S>(
    name: &str,
    default_cases: u64,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Clone + Send + 'static,
{
    let budget = Budget::from_env(default_cases);
    let current: Current<S::Value> = Arc::new(Mutex::new(None));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = spawn_watchdog(name.to_owned(), current.clone(), done.clone());
    let started = Instant::now();
    let mut cases_run = 0u64;
    loop {
        let batch = match budget {
            Budget::Cases(total) => (total - cases_run).min(BATCH_CASES),
            Budget::Time(limit) if started.elapsed() < limit => BATCH_CASES,
            Budget::Time(_) => 0,
        };
        if batch == 0 {
            break;
        }
        let config = Config {
            cases: u32::try_from(batch).unwrap_or(u32::MAX),
            // A target's regressions are kept as named tests beside it, not as seeds.
            failure_persistence: None,
            // Shrinking a failure must end too.
            max_shrink_time: 60_000,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&strategy, |value| {
            set(&current, Some((Instant::now(), value.clone())));
            let outcome = check(value);
            set(&current, None);
            outcome
        });
        set(&current, None);
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, value)) => {
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                panic!("fuzz target {name} failed: {reason}\nminimal input: {value:#?}");
            }
            Err(TestError::Abort(reason)) => {
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                panic!("fuzz target {name} aborted: {reason}");
            }
        }
        cases_run += batch;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = watchdog.join();
    eprintln!(
        "fuzz target {name}: {cases_run} cases in {:.1?}",
        started.elapsed()
    );
}

fn set<V>(current: &Mutex<Option<(Instant, V)>>, value: Option<(Instant, V)>) {
    *current.lock().unwrap_or_else(|poison| poison.into_inner()) = value;
}

/// Watches the case in progress; one that runs past the hang limit is printed and the
/// process ends (the hung thread cannot be stopped from outside).
fn spawn_watchdog<V: Debug + Send + 'static>(
    name: String,
    current: Current<V>,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let limit = hang_limit();
    std::thread::spawn(move || {
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            let guard = current.lock().unwrap_or_else(|poison| poison.into_inner());
            if let Some((since, value)) = guard.as_ref() {
                if since.elapsed() > limit {
                    eprintln!(
                        "fuzz target {name}: one case ran longer than {limit:?} (a hang)\ninput: {value:#?}"
                    );
                    std::process::exit(70);
                }
            }
        }
    })
}

/// One change to a byte string.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Flips bit `bit` of the byte at the position.
    FlipBit(Index, u8),
    /// Overwrites the byte at the position.
    SetByte(Index, u8),
    /// Overwrites 2, 4 or 8 bytes at the position with a little-endian integer
    /// (length fields and counts set to extreme values).
    SetInt(Index, u8, u64),
    /// Cuts the string at the position.
    Truncate(Index),
    /// Inserts bytes at the position.
    Insert(Index, Vec<u8>),
    /// Removes up to this many bytes at the position.
    Remove(Index, u8),
    /// Copies up to this many bytes from the first position over the second.
    CopyWithin(Index, Index, u8),
    /// Repeats up to this many bytes at the position (a duplicated record or frame).
    Duplicate(Index, u16),
    /// Replaces everything from the position on with the tail of another seed from its
    /// position.
    Splice(Index, Index, Index),
}

/// Integers that break length checks: zero, one, the type's extremes and sign
/// boundaries, and small values.
fn interesting_int() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(0x7F),
        Just(0x80),
        Just(0xFF),
        Just(0x7FFF),
        Just(0xFFFF),
        Just(0x7FFF_FFFF),
        Just(0x8000_0000),
        Just(0xFFFF_FFFF),
        Just(i64::MAX as u64),
        Just(u64::MAX),
        0u64..=64,
        any::<u64>(),
    ]
}

/// One mutation of the kinds [`mutated`] applies, for targets that pick the string to
/// mutate themselves.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        3 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte(at, byte)),
        4 => (any::<Index>(), prop_oneof![Just(2u8), Just(4), Just(8)], interesting_int())
            .prop_map(|(at, width, value)| Mutation::SetInt(at, width, value)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        2 => (any::<Index>(), 1u8..64).prop_map(|(at, n)| Mutation::Remove(at, n)),
        1 => (any::<Index>(), any::<Index>(), 1u8..64)
            .prop_map(|(from, to, n)| Mutation::CopyWithin(from, to, n)),
        1 => (any::<Index>(), 1u16..512).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(seed, from, at)| Mutation::Splice(seed, from, at)),
    ]
}

impl Mutation {
    /// Applies the mutation to `bytes`; `seeds` are the other strings a splice takes from.
    pub fn apply(&self, bytes: &mut Vec<u8>, seeds: &[Vec<u8>]) {
        let len = bytes.len();
        match self {
            Mutation::FlipBit(at, bit) if len > 0 => bytes[at.index(len)] ^= 1 << bit,
            Mutation::SetByte(at, byte) if len > 0 => bytes[at.index(len)] = *byte,
            Mutation::SetInt(at, width, value) => {
                let width = usize::from(*width);
                if len >= width {
                    let at = at.index(len - width + 1);
                    bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
                }
            }
            Mutation::Truncate(at) => bytes.truncate(at.index(len + 1)),
            Mutation::Insert(at, new) => {
                let at = at.index(len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Remove(at, n) if len > 0 => {
                let at = at.index(len);
                let end = (at + usize::from(*n)).min(len);
                bytes.drain(at..end);
            }
            Mutation::CopyWithin(from, to, n) if len > 0 => {
                let from = from.index(len);
                let n = usize::from(*n).min(len - from);
                let to = to.index(len - n + 1);
                bytes.copy_within(from..from + n, to);
            }
            Mutation::Duplicate(at, n) if len > 0 => {
                let at = at.index(len);
                let end = (at + usize::from(*n)).min(len);
                let copy = bytes[at..end].to_vec();
                bytes.splice(end..end, copy);
            }
            Mutation::Splice(seed, from, at) if !seeds.is_empty() => {
                let other = seed.get(seeds);
                let from = from.index(other.len() + 1);
                bytes.truncate(at.index(len + 1));
                bytes.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
}

/// Byte strings made from `seeds` (valid encodings) by up to `max_mutations` mutations,
/// with some fully random strings of up to `random_len` bytes mixed in. Unmutated seeds
/// come up too, so round trips are checked on them.
pub fn mutated(
    seeds: Vec<Vec<u8>>,
    max_mutations: usize,
    random_len: usize,
) -> impl Strategy<Value = Vec<u8>> + Clone {
    assert!(!seeds.is_empty(), "a target needs at least one seed");
    let seeds = Arc::new(seeds);
    let from_seeds = {
        let seeds = seeds.clone();
        (
            any::<Index>(),
            proptest::collection::vec(mutation(), 0..=max_mutations),
        )
            .prop_map(move |(seed, mutations)| {
                let mut bytes = seed.get(&seeds).clone();
                for mutation in &mutations {
                    mutation.apply(&mut bytes, &seeds);
                }
                bytes
            })
    };
    prop_oneof![
        9 => from_seeds,
        1 => proptest::collection::vec(any::<u8>(), 0..=random_len),
    ]
}

/// Text made from `seeds` the same way, kept only where it is still UTF-8 (lossily
/// repaired otherwise), for decoders that take strings.
pub fn mutated_text(
    seeds: Vec<String>,
    max_mutations: usize,
    random_len: usize,
) -> impl Strategy<Value = String> + Clone {
    mutated(
        seeds.into_iter().map(String::into_bytes).collect(),
        max_mutations,
        random_len,
    )
    .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Fails the case unless `condition` holds.
pub fn ensure(condition: bool, message: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if condition {
        Ok(())
    } else {
        Err(TestCaseError::fail(message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_in_bounds_on_any_length() {
        run(
            "mutation_bounds",
            256,
            (
                proptest::collection::vec(any::<u8>(), 0..8),
                proptest::collection::vec(mutation(), 0..8),
            ),
            |(mut bytes, mutations)| {
                let seeds = vec![vec![1, 2, 3], Vec::new()];
                for mutation in &mutations {
                    mutation.apply(&mut bytes, &seeds);
                }
                Ok(())
            },
        );
    }

    #[test]
    fn a_budget_comes_from_the_environment_or_the_default() {
        // The variables may be set by whoever runs the suite: only check the default
        // when neither is.
        if std::env::var_os("STRATA_FUZZ_SECONDS").is_none()
            && std::env::var_os("STRATA_FUZZ_CASES").is_none()
            && std::env::var_os("PROPTEST_CASES").is_none()
        {
            assert_eq!(Budget::from_env(7), Budget::Cases(7));
        }
    }
}
