// cardgate's reviewer and analyst page: login, the two tabs, the approval-request
// queue and a request's detail with Approve/Deny. review.js renders what a request
// changes (diff, backtest, override, allowance); explorer.js is the decisions tab.
// Plain DOM, no framework, no build step. Every value from the API is written with
// textContent, never as HTML, so stored strings (reasons, names) cannot inject markup.
'use strict';

const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem('cardgate_key') || '';
let current = null;

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: 'Bearer ' + key } };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  let json = null;
  try { json = await resp.json(); } catch (_) { /* empty or not JSON */ }
  if (!resp.ok) {
    const msg = json && json.error ? json.error.code + ': ' + json.error.message : 'HTTP ' + resp.status;
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  return json;
}

// Small DOM helpers shared by review.js and explorer.js.
function show(id, on) { $(id).classList.toggle('hidden', !on); }
function when(ts) { return ts ? new Date(ts * 1000).toISOString().replace('.000Z', 'Z').replace('T', ' ') : ''; }
function who(r) { return (r && (r.name ? r.name + ' (' + r.id + ')' : r.id)) || ''; }
function money(amount, currency) {
  if (amount === null || amount === undefined) return '';
  return (amount / 100).toFixed(2) + ' ' + String(currency || '').toUpperCase();
}
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return e;
}
function badge(text, kind) { return el('span', { class: 'badge ' + (kind || text), text }); }
function table(headers, rows) {
  const t = el('table');
  const tr = el('tr');
  for (const h of headers) tr.appendChild(el('th', { scope: 'col', text: h }));
  t.appendChild(el('thead', {}, tr));
  const body = el('tbody');
  for (const r of rows) {
    const row = el('tr');
    for (const c of r) row.appendChild(c instanceof Node ? el('td', {}, c) : el('td', { text: c === null || c === undefined ? '' : String(c) }));
    body.appendChild(row);
  }
  t.appendChild(body);
  return t;
}
function facts(pairs) {
  const dl = el('dl', { class: 'facts' });
  for (const [k, v] of pairs) {
    dl.appendChild(el('dt', { text: k }));
    dl.appendChild(v instanceof Node ? el('dd', {}, v) : el('dd', { text: v === null || v === undefined ? '—' : String(v) }));
  }
  return dl;
}
function answer(approved, amount, requested, currency) {
  if (!approved) return badge('decline');
  if (amount !== null && amount !== undefined && requested !== undefined && amount !== requested) {
    return badge('approve ' + money(amount, currency), 'approve');
  }
  return badge('approve');
}

function tab(name) {
  const requests = name === 'requests';
  $('tab-requests').setAttribute('aria-current', requests ? 'page' : 'false');
  $('tab-decisions').setAttribute('aria-current', requests ? 'false' : 'page');
  show('requests-view', requests);
  show('decisions-view', !requests);
  if (!requests) window.cardgateExplorer.open();
}

async function login(candidate) {
  key = candidate;
  try {
    await api('GET', '/v1/approval_requests?limit=1');
  } catch (e) {
    key = '';
    sessionStorage.removeItem('cardgate_key');
    $('login-error').textContent = e.message;
    return;
  }
  sessionStorage.setItem('cardgate_key', key);
  $('login-error').textContent = '';
  show('login', false); show('tabs', true); show('logout', true);
  $('whoami').textContent = 'key …' + key.slice(-6);
  tab('requests');
  await loadQueue();
}

async function loadQueue() {
  $('queue-error').textContent = '';
  const status = $('queue-status').value;
  let list;
  try {
    list = await api('GET', '/v1/approval_requests?limit=100' + (status ? '&status=' + status : ''));
  } catch (e) {
    $('queue-error').textContent = e.message;
    return;
  }
  const rows = $('rows');
  rows.replaceChildren();
  for (const r of list.data) {
    const open = el('button', { type: 'button', class: 'link mono', text: r.id, onclick: () => openRequest(r.id) });
    const tr = el('tr', { class: 'req' });
    tr.dataset.id = r.id;
    tr.appendChild(el('td', {}, open));
    for (const c of [r.action, badge(r.status), who(r.requested_by), r.reason || '', when(r.expires_at)]) {
      tr.appendChild(c instanceof Node ? el('td', {}, c) : el('td', { text: c }));
    }
    rows.appendChild(tr);
  }
  show('empty', list.data.length === 0);
}

async function openRequest(id) {
  let r;
  try { r = await api('GET', '/v1/approval_requests/' + encodeURIComponent(id)); }
  catch (e) { $('queue-error').textContent = e.message; return; }
  current = r;
  $('d-result').textContent = '';
  $('d-result').className = '';
  $('review-reason').value = '';
  render(r);
  show('detail', true);
  $('d-title').focus();
  window.cardgateReview.load(r);
}

function render(r) {
  $('d-id').textContent = r.id;
  $('d-status').textContent = r.status;
  $('d-status').className = 'badge status ' + r.status;
  $('d-action').textContent = r.action;
  $('d-requester').textContent = who(r.requested_by) + ' [' + (r.requested_by.role || '') + ']';
  // The rule's name is free text ("rule sets need a second pair of eyes"): quote it
  // rather than prefix it with "rule".
  $('d-rule').textContent = r.rule ? (r.rule.name ? '“' + r.rule.name + '” (' + r.rule.id + ')' : r.rule.id) : '— (cardgate review)';
  $('d-reason').textContent = r.reason || '(none)';
  $('d-expires').textContent = when(r.expires_at);
  const open = r.status === 'requires_review';
  show('d-open', open);
  show('d-closed', !open);
  if (!open) $('d-closed').replaceChildren(...closedOutcome(r));
}

// What a finished (or not yet submitted) request shows instead of the buttons.
function closedOutcome(r) {
  const out = [el('h3', { class: 'first', text: 'Outcome' }), el('p', {}, badge(r.status))];
  const pairs = [];
  if (r.status === 'pending') pairs.push(['Waiting for', 'the requester to submit it with a reason']);
  if (r.review) {
    pairs.push([r.review.result === 'approved' ? 'Approved by' : 'Denied by', who(r.review.reviewed_by)]);
    pairs.push(['At', when(r.review.reviewed_at)]);
    pairs.push(['Note', r.review.reason || '(none)']);
  }
  const d = r.status_details;
  if (d && (d.error_code || (d.failed && d.failed.error_code))) {
    const f = d.failed || d;
    pairs.push(['Failed', f.error_code + ': ' + (f.message || '')]);
  } else if (r.status === 'succeeded') {
    pairs.push(['Result', 'the action ran']);
  }
  if (pairs.length) out.push(facts(pairs));
  return out;
}

async function review(verb) {
  if (!current) return;
  const reason = $('review-reason').value.trim();
  const body = reason ? { reason } : {};
  try {
    const r = await api('POST', '/v1/approval_requests/' + encodeURIComponent(current.id) + '/' + verb, body);
    current = r;
    render(r);
    $('d-result').textContent = verb === 'approve' ? 'Approved: the request is now ' + r.status + '.' : 'Denied.';
    $('d-result').className = r.status === 'failed' ? 'error' : 'ok';
    $('d-title').focus();
  } catch (e) {
    $('d-result').textContent = e.message;
    $('d-result').className = 'error';
  }
  await loadQueue();
}

$('login-form').addEventListener('submit', (ev) => { ev.preventDefault(); login($('key').value.trim()); });
$('queue-form').addEventListener('submit', (ev) => { ev.preventDefault(); loadQueue(); });
$('queue-status').addEventListener('change', loadQueue);
$('approve').addEventListener('click', () => review('approve'));
$('deny').addEventListener('click', () => review('deny'));
$('tab-requests').addEventListener('click', () => tab('requests'));
$('tab-decisions').addEventListener('click', () => tab('decisions'));
$('logout').addEventListener('click', () => {
  key = ''; current = null;
  sessionStorage.removeItem('cardgate_key');
  show('login', true); show('requests-view', false); show('decisions-view', false);
  show('detail', false); show('logout', false); show('tabs', false);
  $('whoami').textContent = '';
});

window.addEventListener('load', () => { if (key) { login(key); } });
