package main

import "encoding/json"

// inbound is any client frame; which fields matter depends on Type.
type inbound struct {
	Type           string          `json:"type"`
	ConversationID string          `json:"conversation_id"`
	ClientMsgID    string          `json:"client_msg_id"`
	Body           string          `json:"body"`
	Nonce          json.RawMessage `json:"nonce,omitempty"`
}

type welcomeFrame struct {
	Type          string `json:"type"`
	UserID        string `json:"user_id"`
	SessionID     uint64 `json:"session_id"`
	MaxFrameBytes int    `json:"max_frame_bytes"`
}

type subscribedFrame struct {
	Type           string `json:"type"`
	ConversationID string `json:"conversation_id"`
	LastSeq        int64  `json:"last_seq"`
}

type messageFrame struct {
	Type           string `json:"type"`
	ConversationID string `json:"conversation_id"`
	Seq            int64  `json:"seq"`
	MessageID      string `json:"message_id"`
	SenderID       string `json:"sender_id"`
	ClientMsgID    string `json:"client_msg_id"`
	Kind           string `json:"kind"`
	Body           string `json:"body"`
	CreatedAt      int64  `json:"created_at"`
}

type ackFrame struct {
	Type           string `json:"type"`
	ConversationID string `json:"conversation_id"`
	ClientMsgID    string `json:"client_msg_id"`
	Seq            int64  `json:"seq"`
	MessageID      string `json:"message_id"`
	CreatedAt      int64  `json:"created_at"`
}

type pongFrame struct {
	Type  string          `json:"type"`
	Nonce json.RawMessage `json:"nonce,omitempty"`
}

type errorFrame struct {
	Type           string `json:"type"`
	Code           string `json:"code"`
	Message        string `json:"message"`
	ClientMsgID    string `json:"client_msg_id,omitempty"`
	ConversationID string `json:"conversation_id,omitempty"`
}

// Error codes, as turbochat names them.
const (
	codeMalformedFrame = "malformed_frame"
	codeInvalidArg     = "invalid_argument"
	codeForbidden      = "forbidden"
	codeNotFound       = "not_found"
	codeInternal       = "internal"
)

// encode marshals a frame; the frames above always marshal.
func encode(frame interface{}) []byte {
	data, err := json.Marshal(frame)
	if err != nil {
		panic(err)
	}
	return data
}
