//! Cardholders and cards: creation, status changes, and their Stripe objects.

use serde_json::Value;

use super::{
    Card, Cardholder, Emulator, NewCard, NewCardholder, SimError, currency, events, status_in,
};

impl Emulator {
    /// Creates a cardholder; returns the `issuing.cardholder` object.
    pub fn create_cardholder(&mut self, new: NewCardholder, now: i64) -> Result<Value, SimError> {
        new.spending_controls.validate("spending_controls")?;
        let status = status_in(
            new.status.as_deref().unwrap_or("active"),
            &["active", "inactive", "blocked"],
            "status",
        )?;
        let id = self.ids.next("ich");
        let ch = Cardholder {
            name: new.name.unwrap_or_else(|| "Test Cardholder".into()),
            email: new.email,
            status,
            controls: new.spending_controls,
            metadata: new.metadata,
            created: now,
            id: id.clone(),
        };
        let out = cardholder_json(&ch);
        self.cardholders.insert(id, ch);
        Ok(out)
    }

    /// Creates a card for an existing cardholder; returns the `issuing.card` object.
    pub fn create_card(&mut self, new: NewCard, now: i64) -> Result<Value, SimError> {
        if !self.cardholders.contains_key(&new.cardholder) {
            return Err(SimError::missing("cardholder", &new.cardholder));
        }
        new.spending_controls.validate("spending_controls")?;
        let status = status_in(
            new.status.as_deref().unwrap_or("active"),
            &["active", "inactive", "canceled"],
            "status",
        )?;
        let card_type = status_in(
            new.card_type.as_deref().unwrap_or("virtual"),
            &["virtual", "physical"],
            "type",
        )?;
        let id = self.ids.next("ic");
        let last4 = self.ids.digits(4);
        let card = Card {
            cardholder: new.cardholder,
            currency: currency(new.currency.as_deref(), "currency", "usd")?,
            status,
            card_type,
            controls: new.spending_controls,
            metadata: new.metadata,
            last4: format!("{last4:0>4}"),
            created: now,
            id: id.clone(),
        };
        self.cards.insert(id.clone(), card);
        self.card(&id)
    }

    /// Changes a card's status (`active`, `inactive`, `canceled`; canceled is final).
    pub fn set_card_status(&mut self, id: &str, status: &str) -> Result<Value, SimError> {
        let status = status_in(status, &["active", "inactive", "canceled"], "status")?;
        let card = self
            .cards
            .get_mut(id)
            .ok_or_else(|| SimError::missing("card", id))?;
        if card.status == "canceled" && status != "canceled" {
            return Err(SimError::state(
                "card_canceled",
                "a canceled card cannot be reactivated",
            ));
        }
        card.status = status;
        self.card(id)
    }

    /// The `issuing.card` object (with its cardholder embedded).
    pub fn card(&self, id: &str) -> Result<Value, SimError> {
        let card = self
            .cards
            .get(id)
            .ok_or_else(|| SimError::missing("card", id))?;
        let holder = self
            .cardholders
            .get(&card.cardholder)
            .ok_or_else(|| SimError::missing("cardholder", &card.cardholder))?;
        Ok(events::card(
            &events::CardView {
                id: &card.id,
                currency: &card.currency,
                status: &card.status,
                card_type: &card.card_type,
                last4: &card.last4,
                created: card.created,
                metadata: &card.metadata,
                controls: &card.controls,
            },
            &cardholder_json(holder),
        ))
    }

    /// Ids of every card, in creation order of their ids.
    pub fn card_ids(&self) -> Vec<String> {
        self.cards.keys().cloned().collect()
    }

    // === authorizations ===
}

fn cardholder_json(ch: &Cardholder) -> Value {
    events::cardholder(&events::CardholderView {
        id: &ch.id,
        name: &ch.name,
        email: ch.email.as_deref(),
        status: &ch.status,
        created: ch.created,
        metadata: &ch.metadata,
        controls: &ch.controls,
    })
}
