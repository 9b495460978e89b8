"use strict";
// Events into a Node Socket.IO room from outside its server, through the Redis stream, at a
// steady rate: a Socket.IO server that listens on nothing, with the same Redis Streams adapter,
// whose `io.to(ROOM).emit("danmaku", data)` is one XADD to the stream the servers read.
//
//   NODE_PATH=.peers/node/node_modules node loadtest/peers/node/publisher.js REDIS_URL ROOM RATE
//
// `data` is shaped like the liveroom benchmark's danmaku, stamped `ts` (Unix time, seconds)
// when emitted; the loop catches up when it was late, so the offered rate is the asked rate.
// Line protocol (one JSON line answers each): prints {"ready": true}; `start` starts;
// `snap` answers {"sent": N, "t": UNIX}; `stop` stops and answers the same; `quit` or the end
// of stdin exits.
const readline = require("node:readline");
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter } = require("@socket.io/redis-streams-adapter");

const now = () => (performance.timeOrigin + performance.now()) / 1000;
const say = (value) => process.stdout.write(JSON.stringify(value) + "\n");

async function main() {
  const [redisUrl, room, rateArg] = process.argv.slice(2);
  const rate = Number(rateArg);
  const redis = createClient({ url: redisUrl });
  let warned = false;
  redis.on("error", (err) => {
    // Reconnects on its own; say it once (a Ctrl-C of the harness stops Redis first).
    if (!warned) console.error(`publisher.js: redis: ${err.message}`);
    warned = true;
  });
  await redis.connect();
  const io = new Server({ adapter: createAdapter(redis) });
  let sent = 0;
  let running = false;
  let t0 = 0;

  function tick() {
    if (!running) return;
    while (running && sent <= ((performance.now() - t0) / 1000) * rate) {
      const n = sent;
      io.to(room).emit("danmaku", {
        type: "danmaku",
        user: { id: `user-${n % 100}`, name: `viewer ${n % 100}` },
        text: `benchmark danmaku number ${n}`,
        ts: now(),
      });
      sent += 1;
    }
    setTimeout(tick, Math.max(1, t0 + (sent / rate) * 1000 - performance.now()));
  }

  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", (raw) => {
    const line = raw.trim();
    if (line === "start" && !running) {
      running = true;
      t0 = performance.now();
      tick();
      say({ sent, t: now() });
    } else if (line === "snap") {
      say({ sent, t: now() });
    } else if (line === "stop") {
      running = false;
      say({ sent, t: now() });
    } else if (line === "quit") {
      process.exit(0);
    }
  });
  lines.on("close", () => process.exit(0));
  say({ ready: true });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
