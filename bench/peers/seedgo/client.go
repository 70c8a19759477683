package main

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// Time allowed to write a frame to the peer.
	writeWait = 10 * time.Second
	// Time allowed to read the next pong (or any frame) from the peer.
	pongWait = 60 * time.Second
	// Pings go out this often; must be less than pongWait.
	pingPeriod = pongWait * 9 / 10
	// Largest frame read from a client.
	maxFrameBytes = 64 * 1024
	// Frames queued for a client before it counts as too slow.
	sendBuffer = 256
	// Longest a database call may take for one frame.
	dbTimeout = 5 * time.Second
)

// Client is one WebSocket connection: the read pump handles the frames the
// client sends, the write pump writes what is queued on send.
type Client struct {
	srv    *server
	conn   *websocket.Conn
	userID string

	mu     sync.Mutex
	send   chan []byte
	closed bool

	// Conversations the user is known to take part in (read pump only).
	member map[string]bool
}

func newClient(srv *server, conn *websocket.Conn, userID string) *Client {
	return &Client{
		srv:    srv,
		conn:   conn,
		userID: userID,
		send:   make(chan []byte, sendBuffer),
		member: make(map[string]bool),
	}
}

// queue hands a frame to the write pump. A full buffer closes the client
// (the write pump then closes the socket); false means the frame was not
// queued because the client is closed.
func (c *Client) queue(frame []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	select {
	case c.send <- frame:
		return true
	default:
		c.closed = true
		close(c.send)
		return false
	}
}

// close stops the write pump once it has written what is queued.
func (c *Client) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.send)
	}
}

// readPump reads frames until the connection fails or closes, then takes
// the client out of the hub.
func (c *Client) readPump() {
	defer func() {
		c.srv.hub.unregister <- c
		c.conn.Close()
	}()
	c.conn.SetReadLimit(maxFrameBytes)
	_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(pongWait))
	})
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
		c.handle(data)
	}
}

// writePump writes queued frames and pings until send is closed or a
// write fails.
func (c *Client) writePump() {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case frame, ok := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if !ok {
				_ = c.conn.WriteMessage(websocket.CloseMessage,
					websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "closed"))
				return
			}
			if err := c.conn.WriteMessage(websocket.TextMessage, frame); err != nil {
				return
			}
		case <-ticker.C:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

func (c *Client) handle(data []byte) {
	var in inbound
	if err := json.Unmarshal(data, &in); err != nil {
		c.fail(codeMalformedFrame, "not a JSON frame", in)
		return
	}
	switch in.Type {
	case "subscribe":
		c.subscribe(in)
	case "unsubscribe":
		c.srv.hub.unsubscribe <- subscription{client: c, conversationID: in.ConversationID}
	case "send":
		c.sendMessage(in)
	case "ping":
		c.queue(encode(pongFrame{Type: "pong", Nonce: in.Nonce}))
	default:
		c.fail(codeMalformedFrame, "unknown frame type", in)
	}
}

func (c *Client) subscribe(in inbound) {
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	lastSeq, err := c.srv.store.LastSeq(ctx, in.ConversationID, c.userID)
	if err != nil {
		c.storeFailed(err, in)
		return
	}
	c.member[in.ConversationID] = true
	c.srv.hub.subscribe <- subscription{
		client:         c,
		conversationID: in.ConversationID,
		reply: encode(subscribedFrame{
			Type:           "subscribed",
			ConversationID: in.ConversationID,
			LastSeq:        lastSeq,
		}),
	}
}

// sendMessage stores the message, publishes it to every instance, then
// acks it to the sender.
func (c *Client) sendMessage(in inbound) {
	if in.ConversationID == "" || in.ClientMsgID == "" {
		c.fail(codeInvalidArg, "conversation_id and client_msg_id are required", in)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	if !c.member[in.ConversationID] {
		if _, err := c.srv.store.LastSeq(ctx, in.ConversationID, c.userID); err != nil {
			c.storeFailed(err, in)
			return
		}
		c.member[in.ConversationID] = true
	}
	stored, err := c.srv.store.InsertMessage(ctx, in.ConversationID, c.userID, in.ClientMsgID, in.Body)
	if err != nil {
		c.storeFailed(err, in)
		return
	}
	createdAt := stored.CreatedAt.UnixMilli()
	if !stored.Duplicate {
		frame := encode(messageFrame{
			Type:           "message",
			ConversationID: in.ConversationID,
			Seq:            stored.Seq,
			MessageID:      stored.ID,
			SenderID:       c.userID,
			ClientMsgID:    in.ClientMsgID,
			Kind:           "text",
			Body:           in.Body,
			CreatedAt:      createdAt,
		})
		// The message is stored either way; a client that missed it
		// because Redis failed finds it in the history.
		if err := c.srv.broker.Publish(in.ConversationID, frame); err != nil {
			log.Printf("publish to Redis: %v", err)
		}
	}
	c.queue(encode(ackFrame{
		Type:           "ack",
		ConversationID: in.ConversationID,
		ClientMsgID:    in.ClientMsgID,
		Seq:            stored.Seq,
		MessageID:      stored.ID,
		CreatedAt:      createdAt,
	}))
}

func (c *Client) storeFailed(err error, in inbound) {
	switch {
	case errors.Is(err, errNotParticipant):
		c.fail(codeForbidden, "not a participant of this conversation", in)
	case errors.Is(err, errNoConversation):
		c.fail(codeNotFound, "no such conversation", in)
	default:
		log.Printf("%s %s: %v", in.Type, in.ConversationID, err)
		c.fail(codeInternal, "storage failed", in)
	}
}

func (c *Client) fail(code, message string, in inbound) {
	c.queue(encode(errorFrame{
		Type:           "error",
		Code:           code,
		Message:        message,
		ClientMsgID:    in.ClientMsgID,
		ConversationID: in.ConversationID,
	}))
}
