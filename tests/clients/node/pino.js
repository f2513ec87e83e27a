// Sends N log lines to a Loki push URL with pino-loki (JSON), structured metadata from the `meta`
// key, then closes the transport (which flushes) and exits 0.
// Usage: node pino.js HOST TEST N
const pino = require('pino')

const [host, test, count] = process.argv.slice(2)
const transport = pino.transport({
  target: 'pino-loki',
  options: {
    host,
    labels: { job: 'pino', test },
    batching: { interval: 0.2 },
    basicAuth: process.env.LOKI_BASIC_AUTH
      ? { username: 'loglake', password: process.env.LOKI_BASIC_AUTH.split(':')[1] }
      : undefined
  }
})
const logger = pino({ base: { hostname: 'node-host' } }, transport)
for (let i = 0; i < Number(count); i++) {
  logger.info({ n: i, meta: { request_id: `r${i}`, user: 'ann' } }, `line ${i} of ${test}`)
}
transport.on('close', () => process.exit(0))
logger.flush(() => transport.end())
