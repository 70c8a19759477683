package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

// schema is created at start if missing. Messages carry the same keys and
// indexes as turbochat's (a uuid primary key, one seq per conversation, one
// client_msg_id per sender and conversation), so both do the same index
// work per stored message.
const schema = `
CREATE TABLE IF NOT EXISTS conversations (
    id          uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    kind        text         NOT NULL CHECK (kind IN ('direct', 'group')),
    listing_id  text         NULL,
    title       text         NULL,
    last_seq    bigint       NOT NULL DEFAULT 0,
    created_at  timestamptz  NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS conversation_participants (
    conversation_id       uuid         NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id               text         NOT NULL,
    last_read_message_id  uuid         NULL,
    joined_at             timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX IF NOT EXISTS conversation_participants_user_id_idx
    ON conversation_participants (user_id);

CREATE TABLE IF NOT EXISTS messages (
    id               uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id  uuid         NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq              bigint       NOT NULL,
    sender_id        text         NOT NULL,
    client_msg_id    text         NOT NULL,
    body             text         NOT NULL,
    created_at       timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT messages_seq_key UNIQUE (conversation_id, seq),
    CONSTRAINT messages_client_msg_id_key UNIQUE (conversation_id, sender_id, client_msg_id)
);
`

// Any number: taken while the schema is created, so instances starting
// together do not race on CREATE ... IF NOT EXISTS.
const schemaLock = 7_117_001

var (
	errNoConversation = errors.New("no such conversation")
	errNotParticipant = errors.New("not a participant")
)

// Store is the chat's PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
}

func openStore(ctx context.Context, url string, maxConns int) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	cfg.MaxConns = int32(maxConns)
	pool, err := pgxpool.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("creating the schema: %w", err)
	}
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	return s.pool.BeginFunc(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", schemaLock); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, schema)
		return err
	})
}

// Close closes every connection.
func (s *Store) Close() {
	s.pool.Close()
}

// CreateConversation stores a conversation and its participants and
// returns its id.
func (s *Store) CreateConversation(ctx context.Context, kind, listingID, title string, participants []string) (string, error) {
	var id string
	err := s.pool.BeginFunc(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx,
			`INSERT INTO conversations (kind, listing_id, title)
			 VALUES ($1, NULLIF($2, ''), NULLIF($3, ''))
			 RETURNING id::text`,
			kind, listingID, title).Scan(&id)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx,
			`INSERT INTO conversation_participants (conversation_id, user_id)
			 SELECT $1::uuid, unnest($2::text[])`,
			id, participants)
		return err
	})
	return id, err
}

// LastSeq returns the conversation's last seq if userID takes part in it.
func (s *Store) LastSeq(ctx context.Context, conversationID, userID string) (int64, error) {
	if !isUUID(conversationID) {
		return 0, errNoConversation
	}
	var lastSeq int64
	var participant bool
	err := s.pool.QueryRow(ctx,
		`SELECT c.last_seq, p.user_id IS NOT NULL
		 FROM conversations c
		 LEFT JOIN conversation_participants p
		        ON p.conversation_id = c.id AND p.user_id = $2
		 WHERE c.id = $1`,
		conversationID, userID).Scan(&lastSeq, &participant)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, errNoConversation
	case err != nil:
		return 0, err
	case !participant:
		return 0, errNotParticipant
	}
	return lastSeq, nil
}

// storedMessage is what the database assigned to a message.
type storedMessage struct {
	ID        string
	Seq       int64
	CreatedAt time.Time
	// The sender had sent this client_msg_id before: this is that message.
	Duplicate bool
}

// InsertMessage gives the message the conversation's next seq and stores
// it, in one statement (one round trip, one commit): the conversation's
// row lock orders concurrent senders. A client_msg_id seen before returns
// the message stored then.
func (s *Store) InsertMessage(ctx context.Context, conversationID, senderID, clientMsgID, body string) (storedMessage, error) {
	var m storedMessage
	err := s.pool.QueryRow(ctx,
		`WITH next AS (
		     UPDATE conversations SET last_seq = last_seq + 1
		     WHERE id = $1
		     RETURNING id, last_seq
		 )
		 INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, body)
		 SELECT id, last_seq, $2, $3, $4 FROM next
		 RETURNING id::text, seq, created_at`,
		conversationID, senderID, clientMsgID, body).Scan(&m.ID, &m.Seq, &m.CreatedAt)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return m, errNoConversation
	case errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "messages_client_msg_id_key":
		// The whole statement failed, so no seq was taken.
		err = s.pool.QueryRow(ctx,
			`SELECT id::text, seq, created_at FROM messages
			 WHERE conversation_id = $1 AND sender_id = $2 AND client_msg_id = $3`,
			conversationID, senderID, clientMsgID).Scan(&m.ID, &m.Seq, &m.CreatedAt)
		m.Duplicate = true
		return m, err
	}
	return m, err
}

// isUUID tells whether s is a UUID in its usual text form, so a malformed
// id is "no such conversation" rather than a database error.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
