//! A shopping cart, its event versions, and a product-popularity projection: the domain
//! code of the `cart` example.

use serde::{Deserialize, Serialize};
use serde_json::json;
use strata::model::{decode, Aggregate, Upcasters, Versioned};
use strata::projection::{DocumentTx, Projection, ProjectionError};
use strata::{Filter, RecordedEvent};

/// A cart's state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Cart {
    pub items: Vec<(String, u32)>,
    pub checked_out: bool,
}

/// What happens to a cart (version 2 of `ItemAdded` carries a quantity).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CartEvent {
    ItemAdded { sku: String, qty: u32 },
    CheckedOut,
}

/// What can be asked of a cart.
#[derive(Clone, Debug)]
pub enum CartCommand {
    Add { sku: String, qty: u32 },
    CheckOut,
}

/// Why a cart refuses.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum CartError {
    #[error("the cart is checked out")]
    CheckedOut,
    #[error("the cart is empty")]
    Empty,
}

impl Aggregate for Cart {
    type Event = CartEvent;
    type Command = CartCommand;
    type Error = CartError;
    const CATEGORY: &'static str = "cart";

    fn apply(&mut self, event: &CartEvent) {
        match event {
            CartEvent::ItemAdded { sku, qty } => self.items.push((sku.clone(), *qty)),
            CartEvent::CheckedOut => self.checked_out = true,
        }
    }

    fn decide(&self, command: &CartCommand) -> Result<Vec<CartEvent>, CartError> {
        match command {
            _ if self.checked_out => Err(CartError::CheckedOut),
            CartCommand::Add { sku, qty } => Ok(vec![CartEvent::ItemAdded {
                sku: sku.clone(),
                qty: *qty,
            }]),
            CartCommand::CheckOut if self.items.is_empty() => Err(CartError::Empty),
            CartCommand::CheckOut => Ok(vec![CartEvent::CheckedOut]),
        }
    }
}

/// Version 1 of `ItemAdded` was `{ "product": sku }`, one item at a time.
pub fn upcasters() -> Upcasters {
    Upcasters::new().register("ItemAdded", 1, |data| {
        vec![Versioned::new(
            "ItemAdded",
            2,
            json!({ "sku": data["product"], "qty": 1 }),
        )]
    })
}

/// How many of each product were put in carts.
pub struct Popularity {
    pub upcasters: Upcasters,
}

impl Projection for Popularity {
    fn name(&self) -> &str {
        "product-popularity"
    }

    fn filter(&self) -> Filter {
        Filter::new().category("cart").event_type("ItemAdded")
    }

    fn handle(&self, event: &RecordedEvent, tx: &mut DocumentTx) -> Result<(), ProjectionError> {
        let decoded = decode::<CartEvent>(event, &self.upcasters)
            .map_err(|_| ProjectionError::unknown(event))?;
        for item in decoded {
            if let CartEvent::ItemAdded { sku, qty } = item {
                tx.update(&sku, |count: &mut u64| *count += u64::from(qty))?;
            }
        }
        Ok(())
    }
}
