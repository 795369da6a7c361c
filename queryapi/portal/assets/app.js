// The viewer page: lists one organization's audit trail through /portal/api with the token from
// the link, newest first, loading further pages as the reader scrolls. No dependencies; data only
// ever reaches the page as text (textContent), never as markup.
'use strict';
(() => {
  const token = new URLSearchParams(location.search).get('token') || '';
  const PAGE = 100;        // events per request
  const MAX_ROWS = 20000;  // past this, ask for narrower filters instead of growing the page
  const $ = (id) => document.getElementById(id);
  const tbody = $('events').tBodies[0];

  let gen = 0;             // bumped on every new listing; stale answers are dropped
  let after = null;        // cursor of the next page
  let loading = false;
  let done = false;
  let filters = new URLSearchParams();
  const shown = new Map(); // event id -> event, for the detail view
  let selected = null;

  function el(tag, props, ...kids) {
    const n = document.createElement(tag);
    Object.assign(n, props || {});
    for (const k of kids) if (k !== null && k !== undefined && k !== '') n.append(k);
    return n;
  }

  async function call(path, opts = {}) {
    const headers = { Authorization: 'Bearer ' + token };
    if (opts.body) headers['Content-Type'] = 'application/json';
    const res = await fetch('/portal/api' + path, { ...opts, headers, cache: 'no-store', credentials: 'omit' });
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) {
      const err = new Error((body && body.message) || res.statusText || 'request failed');
      err.status = res.status;
      throw err;
    }
    return body;
  }

  function showError(err) {
    const box = $('error');
    if (err.status === 401 || err.status === 403) {
      box.textContent = err.message + ' Ask your administrator for a new link.';
      done = true;
      $('more').hidden = true;
    } else {
      box.textContent = 'Could not load events: ' + err.message;
    }
    box.hidden = false;
  }

  function setStatus(text) { $('status').textContent = text; }

  const pad = (n) => String(n).padStart(2, '0');
  function fmtTime(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }

  function readFilters() {
    const f = new FormData($('filters'));
    const q = new URLSearchParams();
    const values = (name, split) => {
      const v = String(f.get(name) || '').trim();
      if (!v) return [];
      return split ? v.split(',').map((s) => s.trim()).filter(Boolean) : [v];
    };
    for (const a of values('actions', true)) q.append('actions', a);
    const actorKind = f.get('actor_kind');
    for (const a of values('actor', actorKind !== 'actor_names')) q.append(actorKind, a);
    for (const t of values('target', true)) q.append(f.get('target_kind'), t);
    for (const k of ['range_start', 'range_end']) {
      const v = f.get(k);
      if (v) q.set(k, new Date(v).toISOString());
    }
    const text = String(f.get('q') || '').trim();
    if (text) q.set('q', text);
    return q;
  }

  function row(ev) {
    const actor = ev.actor || {};
    const targets = (ev.targets || []).map((t) => t.name || t.id).join(', ');
    const tr = el('tr', { tabIndex: 0 },
      el('td', { className: 'mono', title: ev.occurred_at }, fmtTime(ev.occurred_at)),
      el('td', { title: ev.action }, ev.action),
      el('td', { title: actor.id }, actor.name || actor.id, el('span', { className: 'type' }, actor.type)),
      el('td', { title: targets }, targets),
      el('td', {}, (ev.context && ev.context.location) || ''));
    tr.dataset.id = ev.id;
    return tr;
  }

  function nearBottom() {
    return $('sentinel').getBoundingClientRect().top < window.innerHeight + 800;
  }

  async function load(reset) {
    if (reset) {
      gen++;
      after = null; done = false; loading = false;
      shown.clear(); selected = null;
      tbody.replaceChildren();
      $('error').hidden = true;
    }
    if (loading || done) return;
    const my = gen;
    loading = true;
    setStatus('Loading…');
    const q = new URLSearchParams(filters);
    q.set('limit', String(PAGE));
    if (after) q.set('after', after);
    try {
      const page = await call('/audit_logs/events?' + q.toString());
      if (my !== gen) return;
      const frag = document.createDocumentFragment();
      for (const ev of page.data) {
        shown.set(ev.id, ev);
        frag.append(row(ev));
      }
      tbody.append(frag);
      after = page.list_metadata && page.list_metadata.after;
      done = !after || shown.size >= MAX_ROWS;
      if (shown.size === 0) setStatus('No events match these filters.');
      else if (!after) setStatus(shown.size + (shown.size === 1 ? ' event' : ' events') + ' · end of the audit trail');
      else if (done) setStatus(shown.size + ' events shown · narrow the filters to see older ones');
      else setStatus(shown.size + ' events shown');
    } catch (err) {
      if (my !== gen) return;
      setStatus('');
      showError(err);
    } finally {
      if (my === gen) {
        loading = false;
        $('more').hidden = done;
        if (!done && nearBottom()) load(false);
      }
    }
  }

  function section(title, ...content) {
    return el('section', {}, el('h3', {}, title), ...content);
  }

  function pairs(items, id) {
    const dl = el('dl', id ? { id } : {});
    for (const [k, v] of items) {
      if (v === undefined || v === null || v === '') continue;
      dl.append(el('dt', {}, k), el('dd', {}, typeof v === 'string' ? v : JSON.stringify(v)));
    }
    return dl.childElementCount ? dl : el('p', { className: 'empty' }, 'None');
  }

  const entries = (m) => Object.entries(m || {}).sort(([a], [b]) => a.localeCompare(b));

  function showDetail(ev, tr) {
    if (selected) selected.classList.remove('selected');
    selected = tr;
    tr.classList.add('selected');
    const actor = ev.actor || {};
    const ctx = ev.context || {};
    const targets = (ev.targets || []).map((t) => el('div', { className: 'target' },
      pairs([['ID', t.id], ['Type', t.type], ['Name', t.name], ...entries(t.metadata)])));
    $('detail-title').textContent = ev.action;
    $('detail-body').replaceChildren(
      section('Event', pairs([['ID', ev.id], ['Action', ev.action], ['Occurred', ev.occurred_at],
        ['Received', ev.created_at], ['Version', ev.version || 1]], 'detail-event')),
      section('Actor', pairs([['ID', actor.id], ['Type', actor.type], ['Name', actor.name], ...entries(actor.metadata)], 'detail-actor')),
      section('Targets', ...(targets.length ? targets : [el('p', { className: 'empty' }, 'None')])),
      section('Context', pairs([['Location', ctx.location], ['User agent', ctx.user_agent]])),
      section('Metadata', pairs(entries(ev.metadata), 'detail-metadata')),
      section('JSON', el('pre', { className: 'mono' }, JSON.stringify(ev, null, 2))));
    $('detail').hidden = false;
  }

  function exportStatus(text) { $('export-status').textContent = text; }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function runExport() {
    const btn = $('export');
    btn.disabled = true;
    exportStatus('Starting export…');
    const body = {};
    for (const k of ['actions', 'actor_ids', 'actor_names', 'actor_types', 'targets', 'target_ids']) {
      const v = filters.getAll(k);
      if (v.length) body[k] = v;
    }
    for (const k of ['range_start', 'range_end', 'q']) if (filters.get(k)) body[k] = filters.get(k);
    try {
      let x = await call('/exports', { method: 'POST', body: JSON.stringify(body) });
      const started = Date.now();
      while (x.state === 'pending') {
        if (Date.now() - started > 10 * 60 * 1000) throw new Error('it is taking too long');
        exportStatus('Preparing export…');
        await sleep(1000);
        x = await call('/exports/' + encodeURIComponent(x.id) + '?handle=' + encodeURIComponent(x.handle));
      }
      if (x.state !== 'ready' || !x.url) throw new Error('the export failed');
      exportStatus('Export ready, downloading.');
      const a = el('a', { href: x.url, download: x.id + '.csv' });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (err) {
      exportStatus(err.status === 501 ? 'Exports are not available on this server.' : 'Export failed: ' + err.message);
    } finally {
      btn.disabled = false;
    }
  }

  // The organization's log streams and their health, read-only (shown only when there are some).
  function fmtLag(s) {
    if (!s) return 'up to date';
    if (s < 120) return Math.round(s) + ' s';
    if (s < 7200) return Math.round(s / 60) + ' min';
    return Math.round(s / 3600) + ' h';
  }

  async function loadStreams() {
    let list;
    try { list = await call('/log_streams'); } catch (_) { return; }
    const rows = $('streams-table').tBodies[0];
    rows.replaceChildren();
    for (const s of list.data || []) {
      const health = el('span', { className: 'health health-' + s.health, textContent: s.health });
      rows.append(el('tr', null,
        el('td', { textContent: s.name }),
        el('td', { textContent: s.type }),
        el('td', { textContent: s.state + (s.mode === 'catch_up' ? ' (catching up)' : '') }),
        el('td', null, health),
        el('td', { textContent: fmtLag(s.lag_seconds) }),
        el('td', { textContent: s.last_delivered_at ? fmtTime(s.last_delivered_at) : '—' }),
        el('td', { textContent: s.last_error_at ? fmtTime(s.last_error_at) : '—' })));
    }
    $('streams').hidden = rows.children.length === 0;
  }

  function init() {
    $('filters').addEventListener('submit', (e) => {
      e.preventDefault();
      filters = readFilters();
      load(true);
    });
    $('filters').addEventListener('reset', () => {
      setTimeout(() => { filters = new URLSearchParams(); load(true); }, 0);
    });
    tbody.addEventListener('click', (e) => {
      const tr = e.target.closest('tr');
      if (tr && shown.has(tr.dataset.id)) showDetail(shown.get(tr.dataset.id), tr);
    });
    tbody.addEventListener('keydown', (e) => {
      const tr = e.target.closest('tr');
      if (e.key === 'Enter' && tr && shown.has(tr.dataset.id)) showDetail(shown.get(tr.dataset.id), tr);
    });
    $('close').addEventListener('click', () => { $('detail').hidden = true; });
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape') $('detail').hidden = true; });
    $('more').addEventListener('click', () => load(false));
    $('export').addEventListener('click', runExport);
    new IntersectionObserver((es) => { if (es[0].isIntersecting) load(false); }, { rootMargin: '800px' })
      .observe($('sentinel'));

    call('/session').then((s) => {
      $('org').textContent = s.organization_id;
      $('expiry').textContent = '· link valid until ' + fmtTime(s.expires_at);
      if (!s.exports) $('export').hidden = true;
    }).catch(showError);
    load(true);
    loadStreams();
  }

  document.addEventListener('DOMContentLoaded', init);
})();
