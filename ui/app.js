// Reviewer page for cardgate's approval requests. Plain DOM, no framework, no
// build step. Every value from the API is written with textContent, never as
// HTML, so stored strings (reasons, names) cannot inject markup.
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

function show(id, on) { $(id).classList.toggle('hidden', !on); }
function when(ts) { return ts ? new Date(ts * 1000).toISOString().replace('.000Z', 'Z') : ''; }
function who(r) { return (r && (r.name ? r.name + ' (' + r.id + ')' : r.id)) || ''; }

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
  show('login', false); show('queue', true); show('logout', true);
  $('whoami').textContent = 'key …' + key.slice(-6);
  await loadQueue();
}

async function loadQueue() {
  $('queue-error').textContent = '';
  let list;
  try {
    list = await api('GET', '/v1/approval_requests?status=requires_review&limit=100');
  } catch (e) {
    $('queue-error').textContent = e.message;
    return;
  }
  const rows = $('rows');
  rows.replaceChildren();
  for (const r of list.data) {
    const tr = document.createElement('tr');
    tr.className = 'req';
    tr.dataset.id = r.id;
    for (const text of [r.id, r.action, who(r.requested_by), r.reason || '', when(r.expires_at)]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.appendChild(td);
    }
    tr.addEventListener('click', () => openRequest(r.id));
    rows.appendChild(tr);
  }
  show('empty', list.data.length === 0);
}

async function openRequest(id) {
  let r;
  try { r = await api('GET', '/v1/approval_requests/' + encodeURIComponent(id)); }
  catch (e) { $('queue-error').textContent = e.message; return; }
  current = r;
  render(r);
  $('d-result').textContent = '';
  $('d-result').className = '';
  show('detail', true);
}

function render(r) {
  $('d-id').textContent = r.id;
  $('d-status').textContent = r.status;
  $('d-action').textContent = r.action;
  $('d-requester').textContent = who(r.requested_by) + ' [' + (r.requested_by.role || '') + ']';
  $('d-rule').textContent = r.rule ? (r.rule.name || r.rule.id) : '—';
  $('d-reason').textContent = r.reason || '(none)';
  $('d-expires').textContent = when(r.expires_at);
  $('d-params').textContent = JSON.stringify(r.params, null, 2);
  const open = r.status === 'requires_review';
  $('approve').disabled = !open;
  $('deny').disabled = !open;
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
  } catch (e) {
    $('d-result').textContent = e.message;
    $('d-result').className = 'error';
  }
  await loadQueue();
}

$('login-form').addEventListener('submit', (ev) => { ev.preventDefault(); login($('key').value.trim()); });
$('refresh').addEventListener('click', loadQueue);
$('approve').addEventListener('click', () => review('approve'));
$('deny').addEventListener('click', () => review('deny'));
$('logout').addEventListener('click', () => {
  key = ''; current = null;
  sessionStorage.removeItem('cardgate_key');
  show('login', true); show('queue', false); show('detail', false); show('logout', false);
  $('whoami').textContent = '';
});

if (key) { login(key); }
