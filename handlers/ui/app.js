// The status page: reads /v1/status, /v1/quota and /v1/activity with the
// session cookie and redraws. Everything from the server goes in through
// textContent or SVG attributes, never as HTML.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const NS = 'http://www.w3.org/2000/svg';
  const fmt = (n) => (n === undefined || n === null ? '–' : Number(n).toLocaleString('en-US'));
  const when = (s) => (s ? new Date(s).toLocaleString() : '–');
  const get = (o, path) => path.split('.').reduce((v, k) => (v === undefined || v === null ? undefined : v[k]), o);

  // h builds an element with text children; attributes are set as
  // properties or attributes, never as markup.
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v; else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  function s(tag, attrs) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  const fill = (host, ...kids) => host.replaceChildren(...kids.filter((k) => k !== null && k !== undefined));
  const hhmm = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });

  // windowName turns a Go duration ("1h0m0s", "744h0m0s") into words.
  function windowName(d) {
    const hours = Number((d.match(/^(\d+)h0m0s$/) || [])[1]);
    if (!hours) return d;
    if (hours === 1 || hours === 24) return hours === 1 ? 'hour' : 'day';
    return hours % 24 === 0 ? `${hours / 24} days` : `${hours} hours`;
  }

  async function api(path) {
    const r = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (r.status === 401) {
      location.reload(); // the session ended: show the sign-in form
      throw new Error('signed out');
    }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
    return body;
  }

  // --- /v1/status ---

  function renderStatus(st) {
    $('counted').textContent = `counts as of ${when(st.counted && st.counted.at)}`;
    document.querySelectorAll('[data-k]').forEach((dd) => {
      const v = get(st, dd.dataset.k);
      dd.textContent = fmt(v);
      dd.classList.toggle('bad-now', Boolean(dd.dataset.bad) && v > 0);
    });
    const reasons = Object.entries(st.events.failure_reasons || {}).sort((a, b) => b[1] - a[1]);
    fill($('failure-reasons'), ...(reasons.length ? reasons.map(([r, n]) => h('li', {}, h('b', {}, fmt(n)), ' ', r))
      : [h('li', { class: 'muted' }, 'none')]));

    const blocked = (st.wecom && st.wecom.blocked) || [];
    fill($('blocked'), ...(blocked.length ? blocked.map((b) => h('li', { class: 'bad' },
      h('b', {}, b.api), b.corp_id ? ` (dealer ${b.corp_id})` : '', `: errcode ${b.errcode} ${b.errmsg}`,
      h('br'), h('span', { class: 'warn' }, 'Fix: ', b.fix),
      h('br'), h('span', { class: 'muted' }, `since ${when(b.since)}, next probe ${when(b.next_probe_at)}`)))
      : [h('li', { class: 'good' }, 'none: every API answers')]));

    const rej = Object.entries(st.callbacks.rejected || {}).filter(([, n]) => n > 0);
    fill($('rejected'), ...(rej.length ? rej.map(([k, n]) => h('li', {}, `${k}: ${fmt(n)}`))
      : [h('li', { class: 'muted' }, 'none')]));

    const rc = st.reconcile || {};
    if (!rc.id) {
      fill($('reconcile'), h('p', { class: 'muted' }, 'No sweep yet.'));
    } else {
      const total = rc.checked + rc.remaining;
      fill($('reconcile'),
        h('p', {}, h('b', { 'data-k': 'reconcile.state' }, rc.running ? 'running' : 'finished'),
          ` sweep #${rc.id} (${rc.reason}), started ${when(rc.started_at)}`,
          rc.finished_at ? `, finished ${when(rc.finished_at)}` : ''),
        meter(rc.checked, total || 1, 0),
        h('p', {}, `${fmt(rc.checked)} checked, ${fmt(rc.remaining)} to go, ${fmt(rc.linked)} links found`));
    }

    const wh = st.webhook || {};
    const rows = [
      ['waiting', fmt(wh.undelivered) + (wh.more ? '+' : '')],
      ['failing', fmt(wh.failing)],
      ['oldest waiting since', when(wh.oldest_undelivered_at)],
      ['last delivered', when(wh.last_delivered_at)],
    ];
    fill($('webhook'),
      h('p', {}, wh.configured
        ? (wh.failing > 0 ? h('b', { class: 'bad' }, 'failing') : h('b', { class: 'good' }, 'healthy'))
        : h('span', { class: 'muted' }, 'No webhook configured: notifications stay in the outbox.')),
      h('dl', { class: 'nums' }, ...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      wh.last_error ? h('p', { class: 'bad' }, 'Last error: ', wh.last_error) : null);
  }

  // meter is a bar of used out of limit, with ext (used by other apps) after it.
  function meter(used, limit, ext) {
    const box = h('div', { class: 'meter' });
    const g = s('svg', { viewBox: '0 0 1000 10', preserveAspectRatio: 'none' });
    const w = (n) => String(Math.max(0, Math.min(1000, (1000 * n) / limit)));
    g.append(s('rect', { class: used >= limit ? 'full' : 'used', x: '0', y: '0', height: '10', width: w(used) }));
    if (ext > 0) g.append(s('rect', { class: 'ext', x: w(used), y: '0', height: '10', width: w(ext) }));
    box.append(g);
    return box;
  }

  // --- /v1/quota ---

  function renderQuota(q) {
    const parts = [];
    for (const a of q.apis || []) {
      parts.push(h('h3', {}, a.api));
      for (const w of a.windows) {
        const pct = w.limit ? Math.round((100 * w.used) / w.limit) : 0;
        parts.push(h('div', { class: 'window' },
          h('span', {}, `per ${windowName(w.window)}`),
          h('span', {}, `${fmt(w.used)} of ${fmt(w.limit)} (${pct} %)`,
            w.external_usage ? h('span', { class: 'warn' }, ` + ${fmt(w.external_usage)} by other apps`) : '',
            w.spent_until ? h('span', { class: 'bad' }, ` spent until ${when(w.spent_until)}`) : '')));
        parts.push(meter(w.used, w.limit || 1, w.external_usage || 0));
      }
    }
    fill($('quota'), ...(parts.length ? parts : [h('p', { class: 'muted' }, 'No quota-limited API configured.')]));
    document.querySelectorAll('[data-q]').forEach((dd) => {
      const v = q[dd.dataset.q];
      dd.textContent = fmt(v);
      dd.classList.toggle('bad-now', Boolean(dd.dataset.bad) && v > 0);
    });
    const items = [...(q.registrations || []), q.checks].filter(Boolean);
    fill($('backlog'), ...items.map((b) => h('tr', {}, h('td', {}, b.name === 'checks' ? 'existing-customer checks' : `${b.name} registrations`),
      h('td', {}, fmt(b.count)), h('td', {}, b.count ? when(b.done_at) : '–'))));
  }

  // --- /v1/activity ---

  // chart draws values (one per step from start) as bars, with the
  // largest value and the time axis labelled.
  function chart(host, note, values, start, stepMs, unit) {
    const W = 720, H = 140, L = 40, B = 16, T = 6;
    const max = Math.max(1, ...values);
    const g = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
    const x = (i) => L + ((W - L) * i) / values.length;
    const y = (v) => H - B - ((H - B - T) * v) / max;
    g.append(s('line', { class: 'axis', x1: String(L), x2: String(W), y1: String(H - B), y2: String(H - B) }));
    const bw = Math.max((W - L) / values.length - (values.length > 100 ? 0 : 2), 0.5);
    values.forEach((v, i) => {
      if (!v) return;
      const r = s('rect', { class: 'bar', x: String(x(i)), y: String(y(v)), width: String(bw), height: String(H - B - y(v)) });
      const t = s('title', {});
      t.textContent = `${new Date(start + i * stepMs).toLocaleString()}: ${v.toLocaleString('en-US')}`;
      r.append(t);
      g.append(r);
    });
    const label = (tx, ty, text, anchor) => {
      const e = s('text', { x: String(tx), y: String(ty), 'text-anchor': anchor });
      e.textContent = text;
      g.append(e);
    };
    label(L - 4, T + 8, max.toLocaleString('en-US'), 'end');
    label(L - 4, H - B, '0', 'end');
    const span = values.length * stepMs;
    label(L, H - 3, hhmm(start), 'start');
    label(L + (W - L) / 2, H - 3, hhmm(start + span / 2), 'middle');
    label(W, H - 3, 'now', 'end');
    fill(host, g);
    const total = values.reduce((a, b) => a + b, 0);
    note.textContent = `${total.toLocaleString('en-US')} in the last ${Math.round(span / 3600000)} h; ` +
      `busiest ${unit}: ${Math.max(0, ...values).toLocaleString('en-US')}; this ${unit}: ${(values[values.length - 1] || 0).toLocaleString('en-US')}`;
  }

  function renderActivity(a) {
    chart($('chart-events'), $('chart-events-note'), a.events_per_minute, Date.parse(a.since), 60000, 'minute');
    chart($('chart-links'), $('chart-links-note'), a.links_per_hour, Date.parse(a.hours_since), 3600000, 'hour');
  }

  // --- the story search ---

  function table(rows) {
    return h('table', {}, ...rows.map((r) => h('tr', {}, ...r.map((c) => h('td', {}, c)))));
  }

  function renderStory(q, st) {
    $('story').hidden = false;
    $('story-title').textContent = `Story of ${q}`;
    const active = (st.links || []).filter((l) => l.active);
    fill($('story-why'), active.length
      ? h('p', { class: 'good' }, `Linked: ${active.map((l) => `${l.unionid} ⇄ ${l.corp_id}/${l.external_userid}`).join(', ')}`)
      : h('div', {}, h('h3', {}, 'Why not linked yet'), h('ul', { class: 'list why' }, ...st.why.map((w) => h('li', {}, w)))));
    fill($('story-steps'), ...st.steps.map((p) => h('li', {}, h('time', { datetime: p.at }, when(p.at)), p.what)));
    const cards = [];
    for (const f of st.fans) {
      cards.push(h('div', { class: 'card' }, h('h3', {}, `Fan ${f.unionid}`), table([
        ['state', f.state + (f.last_error ? ` (${f.last_error})` : '')],
        ['priority', String(f.priority)],
        ['registered', when(f.created_at)],
        ['checked for existing customers', when(f.checked_at)],
        ['last active', when(f.last_active_at)],
        ...f.pending_ids.map((p) => [`pending_id ${p.pending_id}`, `issued ${when(p.issued_at)}, valid until ${when(p.expires_at)}`]),
      ])));
    }
    for (const c of st.customers) {
      cards.push(h('div', { class: 'card' }, h('h3', {}, `Customer ${c.corp_id}/${c.external_userid}`), table([
        ...c.lookups.map((l) => [`lookup${l.chat_id ? ' in chat ' + l.chat_id : ''}`,
          `${l.pending_id || 'no pending_id'} (${l.state}${l.reason ? ': ' + l.reason : ''}) ${when(l.resolved_at)}`]),
        ...c.follows.map((f) => [f.chat_id ? `chat ${f.chat_id}` : (f.user_id ? `staff ${f.user_id}` : `unnamed (${f.source})`),
          `${f.active ? 'holds' : 'let go'} since ${when(f.changed_at)}`]),
        ...c.events.map((e) => [`callback #${e.id}`, `${e.kind} ${e.state}${e.reason ? ': ' + e.reason : ''}, ${when(e.received_at)}`]),
      ])));
    }
    for (const l of st.links) {
      cards.push(h('div', { class: 'card' }, h('h3', {}, `Link #${l.id}`), table([
        ['fan', l.unionid], ['customer', `${l.corp_id}/${l.external_userid}`],
        ['via', l.chat_id ? `chat ${l.chat_id}` : `staff ${l.user_id || '–'}`],
        ['pending_id', l.pending_id], ['matched', when(l.matched_at)],
        ['state', l.active ? 'active' : `ended ${when(l.ended_at)} (${l.end_reason})`],
      ])));
    }
    fill($('story-parts'), ...cards);
  }

  async function search(ev) {
    ev.preventDefault();
    const q = $('q').value.trim();
    if (!q) return;
    const m = q.match(/^(\S+)[\s/]+(\S+)$/);
    const params = m ? new URLSearchParams({ corp_id: m[1], external_userid: m[2] }) : new URLSearchParams({ unionid: q });
    try {
      renderStory(q, await api(`/v1/story?${params}`));
    } catch (e) {
      $('story').hidden = false;
      $('story-title').textContent = `Story of ${q}`;
      fill($('story-why'), h('p', { class: 'bad' }, e.message === 'not found' ? 'Nothing is known of it.' : e.message));
      fill($('story-steps'));
      fill($('story-parts'));
    }
  }

  // --- refreshing ---

  const errors = {};
  function showErrors() {
    const msgs = Object.values(errors).filter(Boolean);
    $('error').hidden = msgs.length === 0;
    $('error').textContent = msgs.join('; ');
  }

  // every runs fn now and then ms after each run ends, so slow answers
  // never pile up; a hidden tab asks nothing.
  function every(name, ms, fn) {
    const tick = async () => {
      if (!document.hidden) {
        try {
          await fn();
          errors[name] = '';
          $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
        } catch (e) {
          errors[name] = `${name}: ${e.message}`;
        }
        showErrors();
      }
      setTimeout(tick, ms);
    };
    tick();
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('search').addEventListener('submit', search);
    // cached=1: every open page shares one count of the database, redone
    // when stale (see handlers/snapshot.go), so a large database is not
    // recounted at every refresh.
    every('status', 5000, async () => renderStatus(await api('/v1/status?cached=1')));
    every('quota', 15000, async () => renderQuota(await api('/v1/quota?cached=1')));
    every('activity', 60000, async () => renderActivity(await api('/v1/activity?hours=24&cached=1')));
  });
})();
