// Logs the sample access log's lines through winston-loki (protobuf + snappy, its default) for
// SECONDS, then waits until every batch is acknowledged and prints {"sent", "seconds", "errors"}.
// Usage: NODE_PATH=tests/clients/node/node_modules node benchmarks/loki_winston.js URL SECONDS LOG
// winston-loki sends one batch at a time, every `interval` seconds: lines are logged while fewer
// than MAX_PENDING wait, so a batch holds what arrived since the last one (at most ~MAX_PENDING).
const fs = require('fs')
const winston = require('winston')
const LokiTransport = require('winston-loki')

const [host, seconds, log] = process.argv.slice(2)
const MAX_PENDING = 10000
const lines = fs.readFileSync(log, 'utf8').split('\n').filter(Boolean)
const errors = []
const transport = new LokiTransport({
  host,
  interval: 0.05,
  labels: { job: 'bench' },
  gracefulShutdown: false,
  onConnectionError: err => errors.push(String(err && err.message))
})
transport.batcher.circuitBreakerInterval = 500 // retry a refused batch after 0.5 s, not 60 s
const logger = winston.createLogger({ transports: [transport] })
const pending = () => transport.batcher.batch.streams.reduce((n, s) => n + s.entries.length, 0)
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

async function main () {
  const start = Date.now()
  let sent = 0
  while (Date.now() - start < Number(seconds) * 1000) {
    if (pending() >= MAX_PENDING) { await sleep(2); continue }
    for (let i = 0; i < 500; i++) logger.info(lines[(sent + i) % lines.length])
    sent += 500
    await new Promise(resolve => setImmediate(resolve))
  }
  while (pending() > 0 || transport.batcher.batchesSending > 0) await sleep(10)
  const elapsed = (Date.now() - start) / 1000
  transport.batcher.runLoop = false
  if (transport.batcher.waitResolve) transport.batcher.waitResolve()
  console.log(JSON.stringify({ sent, seconds: elapsed, errors: errors.length }))
  process.exit(0)
}
main()
