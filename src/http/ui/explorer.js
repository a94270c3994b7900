// The decisions tab: search recent decisions (GET /v1/decisions) by authorization,
// card, cardholder, reason or rule, and read one decision's explanation
// (GET /v1/decisions/{id}). Read-only. Uses the helpers of app.js.
'use strict';

(function () {
  const FIELDS = ['authorization', 'card', 'cardholder', 'reason', 'rule'];
  let cursor = null;
  let loaded = false;

  function query() {
    const q = new URLSearchParams();
    for (const f of FIELDS) {
      const v = $('s-' + f).value.trim();
      if (v) q.set(f, v);
    }
    q.set('limit', '25');
    return q;
  }

  async function search(more) {
    $('search-error').textContent = '';
    const q = query();
    if (more && cursor) q.set('starting_after', cursor);
    let list;
    try { list = await api('GET', '/v1/decisions?' + q.toString()); }
    catch (e) { $('search-error').textContent = e.message; return; }
    const rows = $('d-rows');
    if (!more) rows.replaceChildren();
    for (const d of list.data) {
      const tr = el('tr', { class: 'decision' });
      tr.dataset.id = d.id;
      const cells = [
        when(d.decided_at),
        el('button', { type: 'button', class: 'link mono', text: d.authorization, onclick: () => explain(d.id) }),
        el('span', { class: 'mono', text: d.card }),
        d.merchant.name + ' · ' + d.merchant.country,
        money(d.amount, d.currency),
        answer(d.approved, d.approved_amount, d.amount, d.currency),
        el('span', { class: 'mono', text: d.reason + (d.rule ? ' · ' + d.rule : '') }),
        el('span', { class: 'mono', text: (d.shadow_rules || []).join(', ') }),
      ];
      cells.forEach((c, i) => tr.appendChild(c instanceof Node ? el('td', {}, c) : el('td', { class: i === 4 ? 'num' : '', text: c })));
      rows.appendChild(tr);
    }
    cursor = list.data.length ? list.data[list.data.length - 1].id : cursor;
    show('more', list.has_more);
    show('d-empty', !more && list.data.length === 0);
  }

  function controlsText(c) {
    const s = c.spending_controls || {};
    const parts = [];
    for (const [k, v] of Object.entries(s)) {
      if (v === null || (Array.isArray(v) && v.length === 0)) continue;
      if (k === 'spending_limits') parts.push('spending_limits: ' + v.map((l) => money(l.amount, s.spending_limits_currency) + ' ' + l.interval + (l.categories && l.categories.length ? ' (' + l.categories.join(', ') + ')' : '')).join('; '));
      else parts.push(k + ': ' + (Array.isArray(v) ? v.join(', ') : String(v)));
    }
    return parts.length ? parts.join('\n') : 'none set';
  }

  function spendTable(spend) {
    const windows = ['daily', 'weekly', 'monthly', 'yearly', 'all_time'];
    const card = spend.card || {};
    const holder = spend.cardholder || {};
    const t = table(['Window', 'Card', 'Cardholder'], windows.map((w) => [w, money(card[w] || 0, ''), money(holder[w] || 0, '')]));
    const v = spend.velocity || {};
    return [t, el('p', { class: 'muted', text: 'Card authorizations: ' + (v['1h'] || 0) + ' in the last hour, ' + (v['24h'] || 0) + ' in 24 h.' })];
  }

  async function explain(id) {
    let d;
    try { d = await api('GET', '/v1/decisions/' + encodeURIComponent(id)); }
    catch (e) { $('search-error').textContent = e.message; return; }
    const x = d.explanation;
    $('x-id').textContent = d.id + ' · ' + d.authorization;
    const body = $('x-body');
    body.replaceChildren(
      el('p', {}, answer(d.approved, d.approved_amount, d.amount, d.currency), ' ',
        el('span', { class: 'mono', text: d.reason + (d.rule ? ' · ' + d.rule : '') })),
      facts([
        ['Decided', when(d.decided_at)],
        ['Amount', money(d.amount, d.currency) + (d.approved && d.approved_amount !== d.amount ? ' (approved ' + money(d.approved_amount, d.currency) + ')' : '')],
        ['Card · cardholder', d.card + ' · ' + d.cardholder],
        ['Merchant', d.merchant.name + ' · ' + d.merchant.category + ' (' + d.merchant.category_code + ') · ' + d.merchant.country],
        ['Event', d.event],
        ['Rule set', x.rules.ruleset + (x.rules.ruleset_is_live ? ' (live)' : ' (no longer live)')],
        ['Latency', (x.latency_us / 1000).toFixed(3) + ' ms'],
      ]),
      el('h3', { text: 'Controls checked' }),
      facts([
        ['Card status', x.status.card || '—'],
        ['Cardholder status', x.status.cardholder || '—'],
        ...x.controls.map((c) => [c.level + ' spending_controls', el('pre', { text: controlsText(c) })]),
        ['Program controls', 'cardgate.toml [program], then overrides'],
      ]),
      el('h3', { text: 'Rules' }),
      facts([
        ['Decided by rule', x.rules.decisive || '— (no rule decided)'],
        ['Shadow matches', x.rules.shadow.length ? x.rules.shadow.join(', ') : '—'],
        ['Decided by', typeof x.decided_by === 'string' ? x.decided_by : x.decided_by.reason + (x.decided_by.control_or_rule ? ' · ' + x.decided_by.control_or_rule : '')],
      ]),
      el('h3', { text: 'Spend the decision saw' }),
      ...spendTable(x.spend || {}),
      el('h3', { text: 'Request' }),
      el('pre', { text: JSON.stringify(x.request, null, 2) }),
    );
    show('explain', true);
    $('x-title').focus();
  }

  $('search-form').addEventListener('submit', (ev) => { ev.preventDefault(); cursor = null; search(false); });
  $('more').addEventListener('click', () => search(true));

  window.cardgateExplorer = {
    open() { if (!loaded) { loaded = true; search(false); } },
    explain,
  };
})();
