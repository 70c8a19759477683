// Command seedgo is the chat server the product brief (shared/seed/)
// plans, built as turbochat-bench's second peer: a gorilla/websocket hub
// with a read pump and a write pump per client, the JWT checked on the
// upgrade, every message inserted into PostgreSQL and then published on
// Redis, and every instance subscribed to Redis to deliver to its own
// clients. Several instances share one database and one Redis.
//
// It speaks the subset of turbochat's JSON frames the bench uses (see
// frames.go), so the bench measures it exactly as it measures turbochat:
//
//	-> subscribe {conversation_id}   <- subscribed {conversation_id, last_seq}
//	-> send {conversation_id, client_msg_id, body}
//	                                 <- ack once the message is stored
//	                                 <- message to every subscriber, on every instance
//	-> ping {nonce}                  <- pong {nonce}
//	<- welcome {user_id, ...} on connection
//
// plus POST /conversations (the body turbochat's router takes) to create a
// conversation and its participants.
//
// Started as `seedgo -database URL -redis ADDR -channel-prefix P ...`; prints
// one JSON line {"http": "ip:port"} on stdout once listening, logs to stderr,
// exits on SIGTERM/SIGINT (and, with -exit-with-stdin, when stdin closes).
//
// The files: main.go (configuration and wiring), auth.go (the JWT),
// handler.go (HTTP: /ws and /conversations), client.go (read and write
// pumps), hub.go (who is subscribed to what on this instance), broker.go
// (Redis pub/sub between instances), store.go (PostgreSQL), frames.go (the
// JSON frames).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// config is every setting, from the command line, validated once in main.
type config struct {
	listen        string
	databaseURL   string
	dbMaxConns    int
	redisURL      string
	channelPrefix string
	jwtSecret     string
	jwtIssuer     string
	jwtAudience   string
	jwtLeeway     time.Duration
	exitWithStdin bool
}

func parseConfig() (config, error) {
	var c config
	flag.StringVar(&c.listen, "listen", "127.0.0.1:0", "address to listen on (port 0: any free port)")
	flag.StringVar(&c.databaseURL, "database", "", "PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/chat")
	flag.IntVar(&c.dbMaxConns, "db-max-conns", 8, "PostgreSQL connections in the pool")
	flag.StringVar(&c.redisURL, "redis", "redis://127.0.0.1:6379", "Redis URL")
	flag.StringVar(&c.channelPrefix, "channel-prefix", "seedgo", "prefix of the Redis channel the instances share")
	flag.StringVar(&c.jwtSecret, "jwt-secret", os.Getenv("SEEDGO_JWT_SECRET"), "HS256 secret (or SEEDGO_JWT_SECRET)")
	flag.StringVar(&c.jwtIssuer, "jwt-issuer", "turbocar", "required JWT iss")
	flag.StringVar(&c.jwtAudience, "jwt-audience", "turbochat", "required JWT aud")
	flag.DurationVar(&c.jwtLeeway, "jwt-leeway", 30*time.Second, "clock skew allowed on exp and nbf")
	flag.BoolVar(&c.exitWithStdin, "exit-with-stdin", false, "exit when stdin closes (when started by another process)")
	flag.Parse()
	switch {
	case c.databaseURL == "":
		return c, errors.New("-database is required")
	case len(c.jwtSecret) < 32:
		return c, errors.New("-jwt-secret must be at least 32 bytes")
	case c.dbMaxConns < 1:
		return c, errors.New("-db-max-conns must be at least 1")
	case c.channelPrefix == "":
		return c, errors.New("-channel-prefix must not be empty")
	}
	return c, nil
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("seedgo: ")
	cfg, err := parseConfig()
	if err != nil {
		log.Fatal(err)
	}
	if err := run(cfg); err != nil {
		log.Fatal(err)
	}
}

func run(cfg config) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if cfg.exitWithStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop()
		}()
	}

	store, err := openStore(ctx, cfg.databaseURL, cfg.dbMaxConns)
	if err != nil {
		return err
	}
	defer store.Close()

	hub := newHub()
	go hub.run()

	broker := newBroker(cfg.redisURL, cfg.channelPrefix)
	defer broker.Close()
	// Subscribed before the first client connects: a message published
	// once this instance said it is ready reaches its clients.
	subscribed := make(chan struct{})
	brokerDone := make(chan error, 1)
	go func() { brokerDone <- broker.Subscribe(ctx, hub.Deliver, subscribed) }()
	select {
	case <-subscribed:
	case err := <-brokerDone:
		return fmt.Errorf("subscribing to Redis: %w", err)
	case <-time.After(10 * time.Second):
		return errors.New("subscribing to Redis: no confirmation within 10s")
	}

	srv := &server{
		hub:    hub,
		store:  store,
		broker: broker,
		auth:   newAuthenticator([]byte(cfg.jwtSecret), cfg.jwtIssuer, cfg.jwtAudience, cfg.jwtLeeway),
	}
	listener, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	httpServer := &http.Server{Handler: srv.routes(), ReadHeaderTimeout: 10 * time.Second}
	serveDone := make(chan error, 1)
	go func() { serveDone <- httpServer.Serve(listener) }()

	ready, _ := json.Marshal(map[string]string{"http": listener.Addr().String()})
	fmt.Println(string(ready))

	select {
	case <-ctx.Done():
	case err := <-serveDone:
		return err
	case err := <-brokerDone:
		return fmt.Errorf("redis subscription ended: %w", err)
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// WebSockets are hijacked: Shutdown stops the listener and plain HTTP;
	// the sockets close when the process exits.
	return httpServer.Shutdown(shutdown)
}
