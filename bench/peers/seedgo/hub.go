package main

// Hub knows which of this instance's clients are subscribed to which
// conversation and hands every delivered message to them. One goroutine
// (run) owns its maps; read pumps and the Redis subscriber talk to it over
// channels.
type Hub struct {
	rooms  map[string]map[*Client]struct{}
	joined map[*Client]map[string]struct{}

	subscribe   chan subscription
	unsubscribe chan subscription
	unregister  chan *Client
	deliveries  chan envelope
}

// subscription asks the hub to add a client to a conversation's room (or
// take it out); reply is queued to the client once it is in, so nothing
// published after the client read its "subscribed" can pass it by.
type subscription struct {
	client         *Client
	conversationID string
	reply          []byte
}

func newHub() *Hub {
	return &Hub{
		rooms:       make(map[string]map[*Client]struct{}),
		joined:      make(map[*Client]map[string]struct{}),
		subscribe:   make(chan subscription),
		unsubscribe: make(chan subscription),
		unregister:  make(chan *Client),
		deliveries:  make(chan envelope, 1024),
	}
}

// Deliver hands a message from Redis to the local subscribers of its
// conversation.
func (h *Hub) Deliver(e envelope) {
	h.deliveries <- e
}

func (h *Hub) run() {
	for {
		select {
		case s := <-h.subscribe:
			h.join(s.client, s.conversationID)
			if !s.client.queue(s.reply) {
				h.remove(s.client)
			}
		case s := <-h.unsubscribe:
			h.leave(s.client, s.conversationID)
		case c := <-h.unregister:
			h.remove(c)
		case e := <-h.deliveries:
			for c := range h.rooms[e.ConversationID] {
				// A client whose send buffer is full is too slow: it is
				// closed and dropped rather than holding up the others.
				if !c.queue(e.Frame) {
					h.remove(c)
				}
			}
		}
	}
}

func (h *Hub) join(c *Client, conversationID string) {
	room := h.rooms[conversationID]
	if room == nil {
		room = make(map[*Client]struct{})
		h.rooms[conversationID] = room
	}
	room[c] = struct{}{}
	joined := h.joined[c]
	if joined == nil {
		joined = make(map[string]struct{})
		h.joined[c] = joined
	}
	joined[conversationID] = struct{}{}
}

func (h *Hub) leave(c *Client, conversationID string) {
	if room := h.rooms[conversationID]; room != nil {
		delete(room, c)
		if len(room) == 0 {
			delete(h.rooms, conversationID)
		}
	}
	delete(h.joined[c], conversationID)
}

// remove takes the client out of every room and closes its send channel.
func (h *Hub) remove(c *Client) {
	for conversationID := range h.joined[c] {
		h.leave(c, conversationID)
	}
	delete(h.joined, c)
	c.close()
}
