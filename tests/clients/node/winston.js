// Sends N log lines to a Loki push URL with winston-loki (protobuf + snappy by default, JSON with
// --json), waits until every batch is acknowledged, and exits 0 (1 when a batch stays refused).
// Usage: node winston.js HOST TEST N [--json] [--retry]
//   --retry: keep retrying refused batches (winston-loki re-queues a refused batch and sends it
//   again; its pause after a failure, 60 s, is shortened to 0.5 s so a test does not wait a minute).
const winston = require('winston')
const LokiTransport = require('winston-loki')

const [host, test, count, ...flags] = process.argv.slice(2)
const json = flags.includes('--json')
const retry = flags.includes('--retry')
const errors = []

const transport = new LokiTransport({
  host,
  json,
  interval: 0.2,
  labels: { job: 'winston', test },
  basicAuth: process.env.LOKI_BASIC_AUTH,
  gracefulShutdown: false,
  onConnectionError: err => errors.push(String(err && err.message))
})
if (retry) transport.batcher.circuitBreakerInterval = 500

let logged = 0
transport.on('logged', () => logged++)
const logger = winston.createLogger({ transports: [transport] })
for (let i = 0; i < Number(count); i++) {
  logger.info(`line ${i} of ${test}`, { n: String(i) })
}

async function main () {
  const deadline = Date.now() + 240000
  // Every entry goes out once its batch is acknowledged: wait for the batch to drain.
  while (Date.now() < deadline) {
    await new Promise(resolve => setTimeout(resolve, 300))
    if (logged < Number(count)) continue
    if (transport.batcher.batch.streams.length === 0 && transport.batcher.batchesSending === 0) {
      break
    }
    if (!retry && errors.length) break
  }
  transport.batcher.runLoop = false
  if (transport.batcher.waitResolve) transport.batcher.waitResolve()
  const left = transport.batcher.batch.streams.reduce((n, s) => n + s.entries.length, 0)
  console.log(JSON.stringify({ errors, left }))
  process.exit(left === 0 && (retry || errors.length === 0) ? 0 : 1)
}
main()
