//! A bank account: the domain code of the `bank` example (decide/apply, no storage code).

use serde::{Deserialize, Serialize};
use strata::model::Aggregate;

/// An account's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub opened: bool,
    pub balance: u64,
}

/// What happens to an account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
    TransferSent { to: String, amount: u64 },
    TransferReceived { from: String, amount: u64 },
}

/// What can be asked of an account.
#[derive(Clone, Debug, PartialEq)]
pub enum AccountCommand {
    Open { owner: String },
    Deposit { amount: u64 },
    Withdraw { amount: u64 },
    SendTransfer { to: String, amount: u64 },
    ReceiveTransfer { from: String, amount: u64 },
}

/// Why an account refuses a command.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("amounts must be positive")]
    ZeroAmount,
    #[error("insufficient funds: balance {balance}, asked {amount}")]
    InsufficientFunds { balance: u64, amount: u64 },
}

impl Aggregate for Account {
    type Event = AccountEvent;
    type Command = AccountCommand;
    type Error = AccountError;
    const CATEGORY: &'static str = "account";

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { .. } => self.opened = true,
            AccountEvent::Deposited { amount } | AccountEvent::TransferReceived { amount, .. } => {
                self.balance += amount
            }
            AccountEvent::Withdrawn { amount } | AccountEvent::TransferSent { amount, .. } => {
                self.balance -= amount
            }
        }
    }

    fn decide(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        use AccountCommand::*;
        match command {
            Open { .. } if self.opened => Err(AccountError::AlreadyOpen),
            Open { owner } => Ok(vec![AccountEvent::Opened {
                owner: owner.clone(),
            }]),
            _ if !self.opened => Err(AccountError::NotOpen),
            Deposit { amount: 0 } | Withdraw { amount: 0 } | SendTransfer { amount: 0, .. } => {
                Err(AccountError::ZeroAmount)
            }
            Deposit { amount } => Ok(vec![AccountEvent::Deposited { amount: *amount }]),
            ReceiveTransfer { from, amount } => Ok(vec![AccountEvent::TransferReceived {
                from: from.clone(),
                amount: *amount,
            }]),
            Withdraw { amount } | SendTransfer { amount, .. } if *amount > self.balance => {
                Err(AccountError::InsufficientFunds {
                    balance: self.balance,
                    amount: *amount,
                })
            }
            Withdraw { amount } => Ok(vec![AccountEvent::Withdrawn { amount: *amount }]),
            SendTransfer { to, amount } => Ok(vec![AccountEvent::TransferSent {
                to: to.clone(),
                amount: *amount,
            }]),
        }
    }
}
