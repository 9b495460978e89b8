"use strict";
// The Node Socket.IO peer of loadtest.peers: Socket.IO 4 with @socket.io/redis-streams-adapter
// (Redis Streams, like the liveroom gateway), one process.
//
//   NODE_PATH=.peers/node/node_modules node loadtest/peers/node/server.js PORT REDIS_URL ROOM
//
// Every socket joins ROOM on connect (in the same tick as the namespace join is answered, so a
// viewer that has its `40` is in the room). Events reach the room from outside the process: the
// adapter reads them from the Redis stream (XREAD) and broadcasts each to the room's sockets,
// encoded once. Prints {"ready": PORT} once listening; `quit` or the end of stdin stops it.
const http = require("node:http");
const readline = require("node:readline");
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter } = require("@socket.io/redis-streams-adapter");

async function main() {
  const [port, redisUrl, room] = process.argv.slice(2);
  const redis = createClient({ url: redisUrl });
  let warned = false;
  redis.on("error", (err) => {
    // Reconnects on its own; say it once (a Ctrl-C of the harness stops Redis first).
    if (!warned) console.error(`server.js: redis: ${err.message}`);
    warned = true;
  });
  await redis.connect();
  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    adapter: createAdapter(redis),
    transports: ["websocket"],
    serveClient: false,
    cors: { origin: "*" },
  });
  io.on("connection", (socket) => socket.join(room));
  httpServer.listen(Number(port), "127.0.0.1", 4096, () => {
    process.stdout.write(JSON.stringify({ ready: Number(port) }) + "\n");
  });
  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    if (line.trim() === "quit") process.exit(0);
  });
  lines.on("close", () => process.exit(0));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
