package main

import (
	"context"
	"encoding/json"
	"log"
	"time"

	"github.com/gomodule/redigo/redis"
)

// envelope is what goes over Redis: the message frame as clients get it,
// and the conversation it belongs to.
type envelope struct {
	ConversationID string          `json:"conversation_id"`
	Frame          json.RawMessage `json:"frame"`
}

// Broker carries messages between instances: each stored message is
// published once on one channel every instance subscribes to, and each
// instance delivers it to its own subscribers of the conversation.
type Broker struct {
	url     string
	channel string
	pool    *redis.Pool
}

func newBroker(url, prefix string) *Broker {
	return &Broker{
		url:     url,
		channel: prefix + ":messages",
		pool: &redis.Pool{
			MaxIdle:     32,
			IdleTimeout: 4 * time.Minute,
			Dial:        func() (redis.Conn, error) { return redis.DialURL(url) },
		},
	}
}

// Publish sends a message frame to every instance.
func (b *Broker) Publish(conversationID string, frame []byte) error {
	payload, err := json.Marshal(envelope{ConversationID: conversationID, Frame: frame})
	if err != nil {
		return err
	}
	conn := b.pool.Get()
	defer conn.Close()
	_, err = conn.Do("PUBLISH", b.channel, payload)
	return err
}

// Subscribe delivers every published message to deliver until ctx ends,
// reconnecting (with backoff) when the connection fails; subscribed is
// closed once the first subscription is confirmed. Pub/sub keeps nothing:
// what is published while an instance is not subscribed never reaches it.
func (b *Broker) Subscribe(ctx context.Context, deliver func(envelope), subscribed chan<- struct{}) error {
	backoff := 100 * time.Millisecond
	for {
		err := b.receive(ctx, deliver, func() {
			if subscribed != nil {
				close(subscribed)
				subscribed = nil
			}
			backoff = 100 * time.Millisecond
		})
		if ctx.Err() != nil {
			return nil
		}
		log.Printf("redis subscription: %v; again in %v", err, backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

// receive runs one subscribed connection until it fails or ctx ends.
func (b *Broker) receive(ctx context.Context, deliver func(envelope), confirmed func()) error {
	conn, err := redis.DialURL(b.url)
	if err != nil {
		return err
	}
	psc := redis.PubSubConn{Conn: conn}
	defer psc.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			psc.Close() // unblocks Receive
		case <-done:
		}
	}()
	if err := psc.Subscribe(b.channel); err != nil {
		return err
	}
	for {
		switch v := psc.Receive().(type) {
		case redis.Message:
			var e envelope
			if err := json.Unmarshal(v.Data, &e); err != nil {
				log.Printf("redis: bad payload: %v", err)
				continue
			}
			deliver(e)
		case redis.Subscription:
			if v.Kind == "subscribe" && v.Channel == b.channel {
				confirmed()
			}
		case error:
			return v
		}
	}
}

// Close closes the publishing connections.
func (b *Broker) Close() {
	b.pool.Close()
}
