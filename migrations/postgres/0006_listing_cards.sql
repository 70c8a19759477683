-- A listing's card on a conversation (title, price, photo URL), set by the
-- operator through the admin API; JSON of turbochat_protocol::http::ListingCard.
-- The SQLite twin is migrations/sqlite/0006_listing_cards.sql.
ALTER TABLE conversations ADD COLUMN listing_card text NULL;
