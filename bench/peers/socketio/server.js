// The Socket.IO peer of turbochat-bench (bench/src/system.rs starts it).
//
// What many teams build instead of a chat backend: one Node.js process,
// Socket.IO 4 with rooms, no persistence, no auth. It speaks the subset of
// turbochat's client protocol the bench uses, as Socket.IO events whose
// names are turbochat's frame types and whose payloads are its frames:
//   -> subscribe {conversation_id}            <- subscribed {conversation_id, last_seq}
//   -> send {conversation_id, client_msg_id, body}
//                                             <- ack {conversation_id, client_msg_id, seq, ...}
//                                             <- message {...} to every room member (sender too, as turbochat)
//   <- welcome {user_id} on connection
// Each room keeps a seq counter in memory so messages carry one, as ours do.
//
// Started as `node server.js [port]`; prints one JSON line {"http": "ip:port"}
// on stdout once listening, logs errors to stderr, exits on SIGTERM/SIGINT.

import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] ?? 0);
const http = createServer();
const io = new Server(http, {
  // The bench connects with the WebSocket transport directly, as a
  // production client behind a load balancer without sticky sessions would.
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 64 * 1024,
});

const seqs = new Map();

io.on("connection", (socket) => {
  const user = String(socket.handshake.query.user ?? socket.id);
  socket.emit("welcome", { user_id: user, session_id: socket.id });

  socket.on("subscribe", (frame) => {
    const room = frame?.conversation_id;
    if (typeof room !== "string") {
      socket.emit("error", { code: "bad_request", message: "conversation_id missing" });
      return;
    }
    socket.join(room);
    socket.emit("subscribed", { conversation_id: room, last_seq: seqs.get(room) ?? 0 });
  });

  socket.on("unsubscribe", (frame) => {
    if (typeof frame?.conversation_id === "string") socket.leave(frame.conversation_id);
  });

  socket.on("send", (frame) => {
    const room = frame?.conversation_id;
    if (typeof room !== "string" || !socket.rooms.has(room)) {
      socket.emit("error", { code: "not_subscribed", message: "subscribe first" });
      return;
    }
    const seq = (seqs.get(room) ?? 0) + 1;
    seqs.set(room, seq);
    const created_at = Date.now();
    const message_id = `${room}/${seq}`;
    io.to(room).emit("message", {
      conversation_id: room,
      seq,
      message_id,
      sender_id: user,
      client_msg_id: frame.client_msg_id,
      kind: "text",
      body: frame.body,
      created_at,
    });
    socket.emit("ack", {
      conversation_id: room,
      client_msg_id: frame.client_msg_id,
      seq,
      message_id,
      created_at,
    });
  });
});

http.listen(port, "127.0.0.1", () => {
  const { address, port: bound } = http.address();
  process.stdout.write(JSON.stringify({ http: `${address}:${bound}` }) + "\n");
});

const stop = () => {
  io.close();
  http.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
