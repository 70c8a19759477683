//! `PUT|DELETE /admin/conversations/{id}/listing`: the operator sets what a
//! conversation is about — the listing's card (title, price, photo) that
//! clients show in the list and the chat header. Only the operator (e.g.
//! the car app's backend) sets it, never a participant; every change is
//! audited with the card it set.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use turbochat_protocol::http::{ListingCard, Price};

use super::admin::{Admin, AdminError};
use crate::refusal::Refusal;

/// The card as the operator sends it: every field known (a typo or a
/// field this server does not store is refused, not silently dropped).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CardBody {
    title: String,
    #[serde(default)]
    price: Option<PriceBody>,
    #[serde(default)]
    photo_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceBody {
    amount_minor: i64,
    currency: String,
}

impl From<CardBody> for ListingCard {
    fn from(body: CardBody) -> Self {
        ListingCard {
            title: body.title,
            price: body.price.map(|p| Price {
                amount_minor: p.amount_minor,
                currency: p.currency,
            }),
            photo_url: body.photo_url,
        }
    }
}

/// Sets the card.
pub(super) async fn set_listing(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(conversation): Path<uuid::Uuid>,
    body: Result<Json<CardBody>, JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let operator = admin.operator(&headers)?;
    let Json(body) = body.map_err(|e| Refusal::invalid(e.body_text()))?;
    let card = ListingCard::from(body);
    card.check().map_err(Refusal::invalid)?;
    let detail = serde_json::to_value(&card).unwrap_or(Value::Null);
    write(&admin, &operator, conversation, Some(card), detail).await
}

/// Clears the card.
pub(super) async fn clear_listing(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(conversation): Path<uuid::Uuid>,
) -> Result<Json<Value>, AdminError> {
    let operator = admin.operator(&headers)?;
    write(&admin, &operator, conversation, None, Value::Null).await
}

async fn write(
    admin: &Admin,
    operator: &str,
    conversation: uuid::Uuid,
    card: Option<ListingCard>,
    detail: Value,
) -> Result<Json<Value>, AdminError> {
    let action = if card.is_some() {
        "set_listing"
    } else {
        "clear_listing"
    };
    let audit = Admin::audit(operator, action, &conversation.to_string(), detail);
    let found = admin
        .store()
        .set_listing_card(conversation, card.as_ref(), &audit)
        .await?;
    if !found {
        return Err(Refusal::no_conversation().into());
    }
    Ok(Json(
        json!({"conversation_id": conversation, "listing": card}),
    ))
}
