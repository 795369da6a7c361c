// scenario.mjs drives one official WorkOS Node SDK against a running Logbook and prints what the
// SDK returned as one JSON object on stdout; the Go test (deploy/sdktest) asserts on it and on what
// Logbook stored. Usage: node scenario.mjs <events|export>
//
// Environment: SDK_DIR (the npm folder holding the SDKs), SDK_PACKAGE (workos-node-11 or
// workos-node-8), BASE_URL, API_KEY, ORG, ACTION.
import { createRequire } from 'node:module';
import path from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const require = createRequire(path.join(env('SDK_DIR'), 'package.json'));
const { WorkOS } = require(env('SDK_PACKAGE'));
const base = new URL(env('BASE_URL'));
const connect = (key) =>
  new WorkOS(key, { apiHostname: base.hostname, port: Number(base.port), https: false });
const workos = connect(env('API_KEY'));
const auditLogs = workos.auditLogs;
const org = env('ORG');
const action = env('ACTION');
const out = { sdk: workos.version, baseURL: workos.baseURL, methods: Object.getOwnPropertyNames(Object.getPrototypeOf(auditLogs)) };

// failure records what an SDK exception carries.
const failure = (e) => ({
  name: e.constructor.name,
  status: e.status,
  code: e.code,
  message: e.message,
  errors: e.errors,
  requestID: e.requestID,
  retryAfter: e.retryAfter,
});
const expectFailure = async (fn) => {
  try {
    await fn();
    return { thrown: false };
  } catch (e) {
    return failure(e);
  }
};

const event = (n, version) => ({
  action,
  version,
  occurredAt: new Date(),
  actor: { type: 'user', id: `user_${n}`, name: `Jon ${n}`, metadata: { role: 'admin' } },
  targets: [{ type: 'team', id: 'team_01GBNJD4MKHVKJGEWK42JNMBGS', name: 'Team', metadata: { plan: 'pro' } }],
  context: { location: '123.123.123.123', userAgent: 'Chrome/104.0.0.0' },
  metadata: { attempts: n },
});

async function events() {
  const schema = await auditLogs.createSchema({
    action,
    actor: { metadata: { role: 'string' } },
    targets: [{ type: 'team', metadata: { plan: 'string' } }],
    metadata: { attempts: 'number' },
  });
  out.schema = schema;

  const key = crypto.randomUUID();
  const first = event(1, schema.version);
  out.created = await auditLogs.createEvent(org, first, { idempotencyKey: key });
  // A retry: same key, same body. Stored once.
  out.retried = await auditLogs.createEvent(org, first, { idempotencyKey: key });
  // Without a key the SDK makes one up (workos-node-<uuid>).
  await auditLogs.createEvent(org, event(2, schema.version));

  out.schemaViolation = await expectFailure(() =>
    auditLogs.createEvent(org, { ...event(3, schema.version), metadata: { attempts: 'three' } }),
  );
  out.unknownVersion = await expectFailure(() => auditLogs.createEvent(org, event(3, 99)));
  out.structural = await expectFailure(() =>
    auditLogs.createEvent(org, { ...event(4, schema.version), actor: { type: 'user' } }),
  );
  out.keyReused = await expectFailure(() =>
    auditLogs.createEvent(org, event(5, schema.version), { idempotencyKey: key }),
  );
  out.wrongKey = await expectFailure(() =>
    connect('sk_wrong_key_0123456789abcdef').auditLogs.createEvent(org, event(6, schema.version)),
  );
  out.badSchema = await expectFailure(() => auditLogs.createSchema({ action, targets: [] }));

  if (typeof auditLogs.listSchemas === 'function') {
    const second = await auditLogs.createSchema({ action, targets: [{ type: 'team' }] });
    out.secondSchema = second;
    const page = await auditLogs.listSchemas(action, { limit: 1 });
    out.schemaPage = { data: page.data, listMetadata: page.listMetadata };
    const next = await auditLogs.listSchemas(action, { limit: 1, after: page.listMetadata.after });
    out.nextSchemaPage = { data: next.data, listMetadata: next.listMetadata };
    const all = await (await auditLogs.listSchemas(action)).autoPagination();
    out.allSchemaVersions = all.map((s) => s.version);
    out.unknownAction = await expectFailure(() => auditLogs.listSchemas('no.such_action'));
  }
}

async function exportAndRetention() {
  const created = await auditLogs.createExport({
    organizationId: org,
    rangeStart: new Date(Date.now() - 3600 * 1000),
    rangeEnd: new Date(Date.now() + 60 * 1000),
    actions: [action],
  });
  out.export = created;
  const deadline = Date.now() + 30_000;
  let got = created;
  while (got.state === 'pending' && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    got = await auditLogs.getExport(created.id);
  }
  out.exportReady = got;
  if (got.url) {
    const res = await fetch(got.url); // no API key: the link is the credential
    out.download = { status: res.status, contentType: res.headers.get('content-type'), body: await res.text() };
  }
  out.badRange = await expectFailure(() =>
    auditLogs.createExport({ organizationId: org, rangeStart: new Date(), rangeEnd: new Date(Date.now() - 1000) }),
  );
  out.missingExport = await expectFailure(() => auditLogs.getExport('audit_log_export_01ARZ3NDEKTSV4RRFFQ69G5FAV'));

  if (typeof auditLogs.getOrganizationAuditLogsRetention === 'function') {
    out.retentionBefore = await auditLogs.getOrganizationAuditLogsRetention({ id: org });
    out.retentionSet = await auditLogs.updateOrganizationAuditLogsRetention({ id: org, retentionPeriod: '1_MONTH' });
    out.retentionAfter = await auditLogs.getOrganizationAuditLogsRetention({ id: org });
    out.retentionBad = await expectFailure(() =>
      auditLogs.updateOrganizationAuditLogsRetention({ id: org, retentionPeriod: '13_MONTHS' }),
    );
  }
}

const phase = process.argv[2];
if (phase === 'events') await events();
else if (phase === 'export') await exportAndRetention();
else throw new Error(`unknown phase ${phase}`);
process.stdout.write(JSON.stringify(out));
