#!/usr/bin/env node
// Interop check: kafkajs 2.2.4 against a running Shardline broker.
//
//   node tests/interop/kafkajs_check.js --bootstrap 127.0.0.1:PORT --topic-prefix PREFIX
//        [--with-group-consumer] [--deadline SECONDS]
//
// Creates topic PREFIX-kjs (2 partitions), so PREFIX must be fresh for every run.
// Prints `ok <check>` per passed check on stdout; on the first failure prints
// `FAIL <check>: <detail>` on stderr and exits 1. Lines starting with `#` are information
// (kafkajs' own WARN/ERROR log lines go to stderr as `# kafkajs ...`).
// Exit codes: 0 all passed, 1 a check failed (or the whole-run deadline hit), 2 bad usage.
// The group consumer checks (needs JoinGroup/SyncGroup/Heartbeat/OffsetCommit/OffsetFetch)
// run only with --with-group-consumer: a group member reads everything exactly once, then
// a new member of the same group gets only what was produced after the first one left.
'use strict'

let kafkajs
try {
  kafkajs = require('kafkajs')
} catch (e) {
  process.stderr.write(`FAIL imports: ${e.message} (run scripts/install-test-deps.sh)\n`)
  process.exit(1)
}
const { Kafka, logLevel, CompressionTypes, Partitioners } = kafkajs

const PARTITIONS = 2
const MESSAGES_PER_CODEC = 300
const BATCH = 50
const RESUME_MESSAGES = 20
const CODECS = [
  ['none', CompressionTypes.None],
  ['gzip', CompressionTypes.GZIP],
]
const PAD = 'shardline-interop-'.repeat(6)

function usage (msg) {
  process.stderr.write(`${msg}\nusage: node kafkajs_check.js --bootstrap HOST:PORT --topic-prefix PREFIX ` +
    '[--with-group-consumer] [--deadline SECONDS]\n')
  process.exit(2)
}

function parseArgs (argv) {
  const args = { bootstrap: null, prefix: null, withGroupConsumer: false, deadline: 85 }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const next = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`)
      return argv[++i]
    }
    if (a === '--bootstrap') args.bootstrap = next()
    else if (a === '--topic-prefix') args.prefix = next()
    else if (a === '--with-group-consumer') args.withGroupConsumer = true
    else if (a === '--deadline') args.deadline = Number(next())
    else if (a === '-h' || a === '--help') usage('kafkajs interop check')
    else usage(`unknown argument ${a}`)
  }
  if (!args.bootstrap || !args.prefix) usage('--bootstrap and --topic-prefix are required')
  if (!(args.deadline > 0)) usage('--deadline must be a positive number of seconds')
  return args
}

class CheckFailed extends Error {}

const info = msg => process.stdout.write(`# ${msg}\n`)
const ok = name => process.stdout.write(`ok ${name}\n`)
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
const describe = e => (e && e.name && e.message ? `${e.name}: ${e.message}` : String(e))

// kafkajs log lines -> stderr, prefixed so a runner can tell them from FAIL lines.
const logCreator = () => ({ namespace, label, log }) => {
  const { message, timestamp, logger, stack, ...extra } = log
  const rest = Object.keys(extra).length ? ' ' + JSON.stringify(extra) : ''
  process.stderr.write(`# kafkajs ${label} [${namespace}] ${message}${rest}\n`)
}

function withTimeout (promise, ms, what) {
  let timer
  return Promise.race([
    promise,
    new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new CheckFailed(`${what} did not finish within ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

async function main (args) {
  const topic = `${args.prefix}-kjs`
  const state = { current: 'startup', clients: [] }
  const fail = detail => { throw new CheckFailed(detail) }

  const kafka = new Kafka({
    clientId: 'shardline-interop-kjs',
    brokers: [args.bootstrap],
    logLevel: logLevel.WARN,
    logCreator,
    retry: { retries: 3 },
    connectionTimeout: 3000,
    requestTimeout: 10000,
  })

  const run = async () => {
    // --- a. admin -------------------------------------------------------------------------
    state.current = 'admin.connect'
    const admin = kafka.admin()
    state.clients.push(['admin', admin])
    await admin.connect()
    ok('admin.connect')

    state.current = 'admin.createTopics'
    const created = await admin.createTopics({
      topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
      waitForLeaders: true,
      timeout: 10000,
    })
    if (created !== true) fail(`createTopics returned ${created} (topic already existed? use a fresh --topic-prefix)`)
    ok('admin.createTopics')

    state.current = 'admin.fetchTopicMetadata'
    const md = await admin.fetchTopicMetadata({ topics: [topic] })
    const tmd = (md.topics || []).find(t => t.name === topic)
    if (!tmd) fail(`metadata has no topic ${topic}: ${JSON.stringify(md)}`)
    const pids = tmd.partitions.map(p => p.partitionId).sort((a, b) => a - b)
    if (JSON.stringify(pids) !== JSON.stringify([...Array(PARTITIONS).keys()])) {
      fail(`topic partitions ${JSON.stringify(pids)}, want 0..${PARTITIONS - 1}`)
    }
    for (const p of tmd.partitions) {
      if (p.partitionErrorCode) fail(`partition ${p.partitionId} has error code ${p.partitionErrorCode}`)
      if (!(p.leader >= 0)) fail(`partition ${p.partitionId} has no leader (${p.leader})`)
    }
    ok('admin.fetchTopicMetadata')

    state.current = 'admin.listTopics'
    const topics = await admin.listTopics()
    if (!topics.includes(topic)) fail(`${topic} missing from listTopics ${JSON.stringify(topics)}`)
    ok('admin.listTopics')

    // --- b. idempotent producer -------------------------------------------------------------
    state.current = 'producer.connect'
    const startTs = Date.now()
    const producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner, // explicit partitions anyway; no v2 warning
    })
    state.clients.push(['producer', producer])
    await producer.connect()
    ok('producer.connect')

    // value "codec:i:PAD" -> { partition, offset }, filled in from the send results
    const expected = new Map()
    const nextOffset = new Map() // partition -> offset the next batch must start at
    for (const [name, compression] of CODECS) {
      state.current = `produce.${name}`
      for (let start = 0; start < MESSAGES_PER_CODEC; start += BATCH) {
        const messages = []
        for (let i = start; i < start + BATCH; i++) {
          messages.push({ key: `k${i}`, value: `${name}:${i}:${PAD}`, partition: i % PARTITIONS })
        }
        const result = await producer.send({ topic, messages, acks: -1, compression, timeout: 10000 })
        const byPartition = new Map()
        for (const r of result) {
          if (r.topicName !== topic) fail(`send result for unexpected topic ${r.topicName}`)
          if (r.errorCode !== 0) fail(`partition ${r.partition}: errorCode ${r.errorCode}`)
          const base = r.baseOffset !== undefined ? r.baseOffset : r.offset
          if (base === undefined || !(Number(base) >= 0)) fail(`partition ${r.partition}: bad baseOffset ${base}`)
          byPartition.set(r.partition, Number(base))
        }
        for (let p = 0; p < PARTITIONS; p++) {
          const sent = messages.filter(m => m.partition === p)
          if (!byPartition.has(p)) fail(`batch ${name}@${start}: no result for partition ${p}: ${JSON.stringify(result)}`)
          const base = byPartition.get(p)
          const want = nextOffset.has(p) ? nextOffset.get(p) : 0
          if (base !== want) {
            fail(`batch ${name}@${start} partition ${p}: baseOffset ${base}, want ${want} ` +
              '(offsets of a sole idempotent producer on a fresh topic are contiguous from 0)')
          }
          sent.forEach((m, j) => expected.set(m.value, { partition: p, offset: base + j, key: m.key }))
          nextOffset.set(p, base + sent.length)
        }
      }
      info(`${name}: ${MESSAGES_PER_CODEC} messages, next offsets ${JSON.stringify([...nextOffset])}`)
      ok(`produce.${name}`)
    }

    // --- c. offsets via admin ---------------------------------------------------------------
    state.current = 'admin.fetchTopicOffsets'
    const offsets = await admin.fetchTopicOffsets(topic)
    info(`fetchTopicOffsets -> ${JSON.stringify(offsets)}`)
    const perPartition = MESSAGES_PER_CODEC * CODECS.length / PARTITIONS
    for (let p = 0; p < PARTITIONS; p++) {
      const o = offsets.find(x => x.partition === p)
      if (!o) fail(`no offsets for partition ${p}`)
      if (Number(o.high) !== perPartition) fail(`partition ${p}: high watermark ${o.high}, want ${perPartition}`)
      if (Number(o.low) !== 0) fail(`partition ${p}: low watermark ${o.low}, want 0`)
    }
    ok('admin.fetchTopicOffsets')

    state.current = 'admin.fetchTopicOffsetsByTimestamp'
    const early = await admin.fetchTopicOffsetsByTimestamp(topic, startTs - 60000)
    info(`fetchTopicOffsetsByTimestamp(start - 60 s) -> ${JSON.stringify(early)}`)
    for (let p = 0; p < PARTITIONS; p++) {
      const o = early.find(x => x.partition === p)
      if (!o || Number(o.offset) !== 0) fail(`partition ${p}: ${JSON.stringify(o)}, want offset 0`)
    }
    ok('admin.fetchTopicOffsetsByTimestamp')

    // A timestamp after every record: the broker answers -1, which kafkajs maps to the high watermark.
    state.current = 'admin.fetchTopicOffsetsByTimestamp.after_all'
    const late = await admin.fetchTopicOffsetsByTimestamp(topic, Date.now() + 3600 * 1000)
    for (let p = 0; p < PARTITIONS; p++) {
      const o = late.find(x => x.partition === p)
      if (!o || Number(o.offset) !== perPartition) {
        fail(`partition ${p}: ${JSON.stringify(o)}, want offset ${perPartition} (-1 from broker -> high watermark)`)
      }
    }
    ok('admin.fetchTopicOffsetsByTimestamp.after_all')

    // --- d. group consumer (optional) -------------------------------------------------------
    if (!args.withGroupConsumer) {
      info('skip consumer.group (pass --with-group-consumer once the broker has consumer groups)')
      return
    }
    state.current = 'consumer.group'
    const consumer = kafka.consumer({
      groupId: `${args.prefix}-g`,
      sessionTimeout: 10000,
      heartbeatInterval: 1000,
      maxWaitTimeInMs: 200,
      retry: { retries: 3 },
    })
    state.clients.push(['consumer', consumer])
    await consumer.connect()
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    const seen = new Map()
    const lastOffset = new Map()
    let problem = null
    let resolveDone
    const done = new Promise(resolve => { resolveDone = resolve })
    const note = msg => { if (!problem) problem = msg; resolveDone() }
    await consumer.run({
      autoCommit: true,
      eachMessage: async ({ topic: t, partition, message }) => {
        const value = message.value ? message.value.toString() : null
        const offset = Number(message.offset)
        const want = expected.get(value)
        if (t !== topic || !want) return note(`unexpected message ${t}[${partition}]@${offset}: ${String(value).slice(0, 60)}`)
        if (seen.has(value)) return note(`${value.split(':').slice(0, 2).join(':')} delivered twice (offsets ${seen.get(value)} and ${offset})`)
        if (want.partition !== partition || want.offset !== offset) {
          return note(`${value.split(':').slice(0, 2).join(':')} read at ${partition}/${offset}, produced at ${want.partition}/${want.offset}`)
        }
        if (!message.key || message.key.toString() !== want.key) return note(`offset ${partition}/${offset}: key ${message.key}, want ${want.key}`)
        if (lastOffset.has(partition) && offset <= lastOffset.get(partition)) {
          return note(`partition ${partition}: offset ${offset} delivered after ${lastOffset.get(partition)}`)
        }
        lastOffset.set(partition, offset)
        seen.set(value, offset)
        if (seen.size === expected.size) resolveDone()
      },
    })
    const timer = sleep(30000).then(() => 'timeout')
    const outcome = await Promise.race([done.then(() => 'done'), timer])
    if (problem) fail(problem)
    if (outcome === 'timeout' || seen.size !== expected.size) {
      const missing = [...expected.keys()].filter(v => !seen.has(v)).slice(0, 5).map(v => v.split(':').slice(0, 2).join(':'))
      fail(`received ${seen.size} of ${expected.size} messages in 30 s; first missing: ${missing.join(', ')}`)
    }
    await withTimeout(consumer.disconnect(), 10000, 'consumer.disconnect')
    state.clients = state.clients.filter(([kind]) => kind !== 'consumer')
    ok('consumer.group')

    // --- e. a new member of the same group resumes after the committed offsets ------------
    state.current = 'consumer.group.resume'
    const more = []
    for (let i = 0; i < RESUME_MESSAGES; i++) {
      more.push({ key: `r${i}`, value: `resume:${i}:${PAD}`, partition: i % PARTITIONS })
    }
    await producer.send({ topic, messages: more, acks: -1, timeout: 10000 })
    const fresh = new Set(more.map(m => m.value))
    const again = kafka.consumer({
      groupId: `${args.prefix}-g`,
      sessionTimeout: 10000,
      heartbeatInterval: 1000,
      maxWaitTimeInMs: 200,
      retry: { retries: 3 },
    })
    state.clients.push(['consumer', again])
    await again.connect()
    // fromBeginning only applies without a committed offset: everything before is skipped.
    await again.subscribe({ topics: [topic], fromBeginning: true })
    const got = new Set()
    let reread = null
    let resolveResumed
    const resumed = new Promise(resolve => { resolveResumed = resolve })
    await again.run({
      autoCommit: true,
      eachMessage: async ({ message }) => {
        const value = message.value ? message.value.toString() : null
        const name = String(value).split(':').slice(0, 2).join(':')
        if (!fresh.has(value)) {
          if (!reread) reread = `${name} was read again although it was committed before the restart`
          return resolveResumed()
        }
        if (got.has(value) && !reread) reread = `${name} delivered twice`
        got.add(value)
        if (got.size === fresh.size) resolveResumed()
      },
    })
    const resumeOutcome = await Promise.race([resumed.then(() => 'done'), sleep(30000).then(() => 'timeout')])
    // Anything re-read from before the restart would arrive right away: give it a moment.
    await sleep(500)
    if (reread) fail(reread)
    if (resumeOutcome === 'timeout' || got.size !== fresh.size) {
      fail(`resumed member got ${got.size} of ${fresh.size} new messages in 30 s`)
    }
    await withTimeout(again.disconnect(), 10000, 'consumer.disconnect')
    state.clients = state.clients.filter(([kind]) => kind !== 'consumer')
    ok('consumer.group.resume')
  }

  const deadline = setTimeout(() => {
    process.stderr.write(`FAIL ${state.current}: whole-run deadline of ${args.deadline} s exceeded\n`)
    process.exit(1)
  }, args.deadline * 1000)

  let code = 0
  try {
    await run()
  } catch (e) {
    code = 1
    process.stderr.write(`FAIL ${state.current}: ${e instanceof CheckFailed ? e.message : describe(e)}\n`)
  }
  // Always disconnect, newest client first, each bounded.
  for (const [kind, client] of state.clients.reverse()) {
    try {
      await withTimeout(client.disconnect(), 5000, `${kind}.disconnect`)
    } catch (e) {
      info(`disconnect ${kind}: ${describe(e)}`)
    }
  }
  clearTimeout(deadline)
  if (code === 0) info('all checks passed')
  return code
}

const args = parseArgs(process.argv.slice(2))
info(`kafkajs ${require('kafkajs/package.json').version}, node ${process.version}, bootstrap ${args.bootstrap}, ` +
  `topic prefix ${args.prefix}${args.withGroupConsumer ? ', with group consumer' : ''}`)
main(args).then(
  code => process.exit(code),
  e => { process.stderr.write(`FAIL internal: ${describe(e)}\n`); process.exit(1) }
)
