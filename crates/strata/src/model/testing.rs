//! `given(events).when(command).then(…)`: unit tests of an aggregate's decisions,
//! without a store.

use super::aggregate::Aggregate;

/// Starts a test from the events already in the aggregate's history.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use strata::model::Aggregate;
/// # #[derive(Clone, Debug, Default, Serialize, Deserialize)] struct Counter { value: u64 }
/// # #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)] enum Ev { Added(u64) }
/// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("too big")] struct TooBig;
/// # impl Aggregate for Counter {
/// #     type Event = Ev; type Command = u64; type Error = TooBig;
/// #     const CATEGORY: &'static str = "counter";
/// #     fn apply(&mut self, Ev::Added(n): &Ev) { self.value += n; }
/// #     fn decide(&self, n: &u64) -> Result<Vec<Ev>, TooBig> {
/// #         if self.value + n > 10 { Err(TooBig) } else { Ok(vec![Ev::Added(*n)]) }
/// #     }
/// # }
/// use strata::model::testing::given;
/// given::<Counter>(vec![Ev::Added(4)]).when(&3).then_events(vec![Ev::Added(3)]);
/// given::<Counter>(vec![Ev::Added(9)]).when(&3).then_error(TooBig);
/// ```
pub fn given<A: Aggregate>(events: Vec<A::Event>) -> Given<A> {
    let mut state = A::default();
    for event in &events {
        state.apply(event);
    }
    Given { state }
}

/// An aggregate built from its history.
#[derive(Debug)]
pub struct Given<A> {
    state: A,
}

impl<A: Aggregate> Given<A> {
    /// Decides on `command`.
    pub fn when(self, command: &A::Command) -> Then<A> {
        let outcome = self.state.decide(command);
        Then {
            state: self.state,
            outcome,
        }
    }
}

/// The decision, to check.
#[derive(Debug)]
pub struct Then<A: Aggregate> {
    state: A,
    outcome: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Then<A> {
    /// Asserts the command produced exactly `expected`; returns the resulting state.
    #[track_caller]
    pub fn then_events(self, expected: Vec<A::Event>) -> A
    where
        A::Event: PartialEq,
    {
        match self.outcome {
            Ok(events) => {
                assert_eq!(events, expected, "the command produced other events");
                let mut state = self.state;
                for event in &events {
                    state.apply(event);
                }
                state
            }
            Err(error) => panic!("expected events {expected:?}, the command was refused: {error}"),
        }
    }

    /// Asserts the command was refused with `expected`.
    #[track_caller]
    pub fn then_error(self, expected: A::Error)
    where
        A::Error: PartialEq,
    {
        match self.outcome {
            Ok(events) => {
                panic!("expected the error {expected:?}, the command produced {events:?}")
            }
            Err(error) => assert_eq!(error, expected),
        }
    }
}
