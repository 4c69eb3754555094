// node-postgres (pg, pg-cursor) against the proxy's compat scenario
// (tests/integration/test_compat_node.py runs this).
//
// Usage: node compat.js SCENARIO...
// with PGHOST, PGPORT, PGDATABASE, PGUSER and PGPASSWORD in the environment.
// Scenarios: queries, cursor, denied, transaction. Prints one key=value per
// line for the test to assert; an unexpected error prints
// <scenario>.error=... and makes the exit status 1.
'use strict';

const { Client } = require('pg');
const Cursor = require('pg-cursor');

const PEOPLE = 'SELECT id, name, ssn FROM compat.people';
const BY_ID = { name: 'people-by-id', text: `${PEOPLE} WHERE id = $1` };

function out(key, value) {
  process.stdout.write(`${key}=${String(value).replace(/\n/g, '\\n')}\n`);
}

// "id|name|ssn" rows joined with ";".
function rows(result) {
  return result.map((r) => `${r.id}|${r.name}|${r.ssn}`).join(';');
}

async function connect() {
  const client = new Client({
    host: process.env.PGHOST,
    port: Number(process.env.PGPORT),
    database: process.env.PGDATABASE,
    user: process.env.PGUSER,
    password: process.env.PGPASSWORD,
    application_name: 'node-compat',
    connectionTimeoutMillis: 10000,
  });
  await client.connect();
  return client;
}

// The error a query fails with, or null when it succeeds.
async function failure(promise) {
  try {
    await promise;
    return null;
  } catch (err) {
    return err;
  }
}

async function one(client, text, values) {
  const res = await client.query({ text, values, rowMode: 'array' });
  return res.rows.length ? res.rows[0][0] : '<no row>';
}

// Named protocol-level statements this session holds on the server.
async function named(client) {
  return one(
    client,
    'SELECT string_agg(name, \',\' ORDER BY name) FROM pg_prepared_statements ' +
      "WHERE NOT from_sql AND strpos(statement, 'pg_prepared' || '_statements') = 0",
  );
}

async function queries(client) {
  // No values: the simple protocol, several statements in one Query.
  const simple = await client.query(`${PEOPLE} ORDER BY id`);
  out('queries.simple', rows(simple.rows));
  const multi = await client.query(`${PEOPLE} WHERE id = 1; SELECT 'two' AS step`);
  out('queries.multi', `${multi.length}:${rows(multi[0].rows)}:${multi[1].rows[0].step}`);
  // Values: the extended protocol with the unnamed statement.
  const extended = await client.query(`${PEOPLE} WHERE id = $1`, [3]);
  out('queries.extended', rows(extended.rows));
  out('queries.extended_fields', extended.fields.map((f) => f.name).join(','));
  const filter = 'SELECT count(*) FROM compat.people WHERE ssn = $1';
  out('queries.filter', await one(client, filter, ['****']));
  // A named statement: parsed once, then only Bind/Execute.
  const seen = [];
  for (let id = 1; id <= 6; id++) {
    const res = await client.query({ ...BY_ID, values: [id] });
    seen.push(rows(res.rows));
  }
  out('queries.named', seen.join(';'));
  out('queries.named_on_server', await named(client));
}

async function cursor(client) {
  const cur = client.query(new Cursor(`${PEOPLE} WHERE id > $1 ORDER BY id`, [0]));
  const batches = [];
  const all = [];
  for (;;) {
    const batch = await cur.read(3);
    if (batch.length === 0) break;
    batches.push(batch.length);
    all.push(...batch);
  }
  await cur.close();
  out('cursor.batches', batches.join(','));
  out('cursor.rows', rows(all));
  const denied = client.query(new Cursor('SELECT id, notes FROM compat.people'));
  const err = await failure(denied.read(3));
  out('cursor.denied.code', err && err.code);
  await denied.close().catch(() => {});
  out('cursor.next', await one(client, 'SELECT ssn FROM compat.people WHERE id = $1', [9]));
}

async function denied(client) {
  let err = await failure(client.query('SELECT id, notes FROM compat.people'));
  out('denied.simple.code', err && err.code);
  out('denied.simple.message', err && err.message);
  out('denied.simple.next', await one(client, 'SELECT ssn FROM compat.people WHERE id = 2'));
  err = await failure(client.query('SELECT notes FROM compat.people WHERE id = $1', [1]));
  out('denied.extended.code', err && err.code);
  out('denied.extended.next', rows((await client.query(`${PEOPLE} WHERE id = $1`, [4])).rows));
  // A refused named statement is not prepared: running it again is refused again.
  const notes = { name: 'notes-by-id', text: 'SELECT notes FROM compat.people WHERE id = $1' };
  err = await failure(client.query({ ...notes, values: [1] }));
  out('denied.named.code', err && err.code);
  err = await failure(client.query({ ...notes, values: [2] }));
  out('denied.named.again', err && err.code);
  const res = await client.query({ ...BY_ID, values: [5] });
  out('denied.named.next', rows(res.rows));
}

async function transaction(client) {
  await client.query('DELETE FROM compat.scratch WHERE id BETWEEN 4100 AND 4199');
  await client.query('BEGIN');
  await client.query('INSERT INTO compat.scratch VALUES ($1, $2)', [4100, 'rolled back']);
  let err = await failure(client.query('SELECT notes FROM compat.people WHERE id = 1'));
  out('transaction.denied.code', err && err.code);
  await client.query('ROLLBACK');
  out('transaction.denied.after_rollback',
    await one(client, 'SELECT count(*) FROM compat.scratch WHERE id = $1', [4100]));
  // A server error in a transaction: the same client goes on after ROLLBACK.
  await client.query('BEGIN');
  err = await failure(client.query('SELECT 1 / $1::int', [0]));
  out('transaction.error.code', err && err.code);
  await client.query('ROLLBACK');
  await client.query('BEGIN');
  const insert = 'INSERT INTO compat.scratch VALUES ($1, $2), ($3, $4)';
  await client.query(insert, [4101, 'kept', 4102, 'kept']);
  const masked = await client.query(`${PEOPLE} WHERE id = $1`, [6]);
  await client.query('COMMIT');
  out('transaction.masked', rows(masked.rows));
  out('transaction.committed',
    await one(client, 'SELECT count(*) FROM compat.scratch WHERE id BETWEEN 4100 AND 4199'));
  const deleted = await client.query('DELETE FROM compat.scratch WHERE id BETWEEN 4100 AND 4199');
  out('transaction.deleted', deleted.rowCount);
}

const SCENARIOS = { queries, cursor, denied, transaction };

async function main(names) {
  let failed = false;
  for (const name of names) {
    let client = null;
    try {
      if (!SCENARIOS[name]) throw new Error(`unknown scenario ${name}`);
      client = await connect();
      await SCENARIOS[name](client);
    } catch (err) {
      failed = true;
      out(`${name}.error`, `${err.code || ''} ${err.message}`);
    } finally {
      if (client) await client.end().catch(() => {});
    }
  }
  process.exitCode = failed ? 1 : 0;
}

main(process.argv.slice(2));
