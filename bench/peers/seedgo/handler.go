package main

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
)

// server holds what the HTTP handlers share.
type server struct {
	hub      *Hub
	store    *Store
	broker   *Broker
	auth     *authenticator
	sessions atomic.Uint64
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 1024,
	// Idle connections hold no write buffer.
	WriteBufferPool: &sync.Pool{},
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", s.serveWS)
	mux.HandleFunc("/conversations", s.createConversation)
	return mux
}

// serveWS checks the token (query parameter `token`), upgrades, welcomes
// the client and starts its pumps.
func (s *server) serveWS(w http.ResponseWriter, r *http.Request) {
	userID, err := s.auth.userID(r.URL.Query().Get("token"))
	if err != nil {
		writeError(w, http.StatusUnauthorized, authCode(err), err.Error())
		return
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the request
	}
	c := newClient(s, conn, userID)
	c.queue(encode(welcomeFrame{
		Type:          "welcome",
		UserID:        userID,
		SessionID:     s.sessions.Add(1),
		MaxFrameBytes: maxFrameBytes,
	}))
	go c.writePump()
	go c.readPump()
}

// createConversationRequest is the body turbochat's router takes.
type createConversationRequest struct {
	Kind         string   `json:"kind"`
	PeerID       string   `json:"peer_id"`
	ListingID    string   `json:"listing_id"`
	Participants []string `json:"participants"`
	Title        string   `json:"title"`
}

// createConversation: POST /conversations with a bearer token; the caller
// takes part, with peer_id (direct) or participants (group).
func (s *server) createConversation(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, codeInvalidArg, "POST only")
		return
	}
	userID, err := s.auth.userID(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	if err != nil {
		writeError(w, http.StatusUnauthorized, authCode(err), err.Error())
		return
	}
	var req createConversationRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxFrameBytes)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, codeInvalidArg, "body is not a conversation")
		return
	}
	participants := []string{userID}
	switch req.Kind {
	case "direct":
		if req.PeerID == "" || req.PeerID == userID {
			writeError(w, http.StatusBadRequest, codeInvalidArg, "direct needs another peer_id")
			return
		}
		participants = append(participants, req.PeerID)
	case "group":
		seen := map[string]bool{userID: true}
		for _, p := range req.Participants {
			if p != "" && !seen[p] {
				seen[p] = true
				participants = append(participants, p)
			}
		}
	default:
		writeError(w, http.StatusBadRequest, codeInvalidArg, "kind is direct or group")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	id, err := s.store.CreateConversation(ctx, req.Kind, req.ListingID, req.Title, participants)
	if err != nil {
		log.Printf("create conversation: %v", err)
		writeError(w, http.StatusInternalServerError, codeInternal, "storage failed")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]string{"conversation_id": id})
}

func authCode(err error) string {
	if errors.Is(err, errExpired) {
		return "token_expired"
	}
	return "unauthorized"
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": code, "message": message})
}
