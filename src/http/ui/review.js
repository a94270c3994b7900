// What an approval request changes, from GET /v1/approval_requests/{id}/review:
// a rule-set publish or list change as a line diff against the live rules with
// the backtest of the proposed set beside the Approve button; an override or an
// allowance as the card, merchant, amount and the decision it changes. Uses the
// helpers of app.js; every API value is written as text.
'use strict';

(function () {
  const CONTEXT = 3; // unchanged lines kept around each change

  function diffView(lines) {
    const changed = lines.map((l) => l.op !== 'equal');
    const keep = lines.map((_, i) => {
      for (let d = -CONTEXT; d <= CONTEXT; d++) if (changed[i + d]) return true;
      return false;
    });
    const body = el('tbody');
    let skipped = 0;
    const flush = () => {
      if (skipped) body.appendChild(el('tr', { class: 'skip' }, el('td', { colspan: '4', text: '… ' + skipped + ' unchanged line' + (skipped === 1 ? '' : 's') })));
      skipped = 0;
    };
    lines.forEach((l, i) => {
      if (!keep[i]) { skipped++; return; }
      flush();
      const sign = l.op === 'insert' ? '+' : l.op === 'delete' ? '−' : ' ';
      body.appendChild(el('tr', { class: l.op },
        el('td', { class: 'ln mono', text: l.old || '' }),
        el('td', { class: 'ln mono', text: l.new || '' }),
        el('td', { class: 'sign mono', text: sign, 'aria-label': l.op === 'equal' ? 'unchanged' : l.op === 'insert' ? 'added' : 'removed' }),
        el('td', { class: 'text mono', text: l.text })));
    });
    flush();
    const added = lines.filter((l) => l.op === 'insert').length;
    const removed = lines.filter((l) => l.op === 'delete').length;
    return [
      el('p', {}, el('b', { class: 'ok', text: '+' + added }), ' ', el('b', { class: 'error', text: '−' + removed }), ' lines'),
      el('div', { class: 'diff', id: 'diff', tabindex: '0', role: 'region', 'aria-label': 'Rules file diff' }, el('table', {}, body)),
    ];
  }

  function outcome(o, currency) {
    const what = o.approved ? (o.amount ? 'approve ' + money(o.amount, currency) : 'approve') : 'decline';
    return el('span', {}, badge(what, o.approved ? 'approve' : 'decline'), ' ', el('span', { class: 'mono', text: o.reason }));
  }

  function backtestPanel(set) {
    const panel = $('d-backtest');
    panel.replaceChildren();
    show('d-backtest', true);
    panel.appendChild(el('h3', { text: 'Backtest on recorded traffic' }));
    if (set.error) {
      panel.appendChild(el('p', { class: 'error', text: 'The proposed rules do not compile: ' + set.error }));
      return;
    }
    const b = set.backtest;
    const r = b.report;
    const form = el('form', { id: 'bt-form', class: 'search' },
      el('label', { for: 'bt-days' }, 'Days replayed', el('input', { id: 'bt-days', type: 'number', min: '1', max: '90', value: String(b.days), style: 'width:5em' })),
      el('button', { type: 'submit', text: 'Re-run' }));
    form.addEventListener('submit', (ev) => { ev.preventDefault(); load(window.cardgateCurrent(), Number($('bt-days').value)); });
    panel.appendChild(form);
    panel.appendChild(el('p', { id: 'bt-summary' },
      el('span', { class: 'big', text: r.changed.total + ' of ' + r.replayed }),
      ' decisions since ' + when(b.since) + ' would change' + (b.truncated ? ' (newest 50,000 replayed)' : '') + '; ' + r.unchanged + ' unchanged' + (r.skipped ? ', ' + r.skipped + ' skipped' : '') + '.'));
    panel.appendChild(facts([
      ['approve → decline', r.changed.approve_to_decline],
      ['decline → approve', r.changed.decline_to_approve],
      ['amount changed', r.changed.amount],
      ['reason only', r.changed.reason],
    ]));
    if (r.by_rule.length) {
      panel.appendChild(el('h3', { text: 'By rule' }));
      panel.appendChild(table(['Rule', 'a→d', 'd→a', 'amount', 'reason'],
        r.by_rule.map((x) => [el('span', { class: 'mono', text: x.rule }), x.approve_to_decline, x.decline_to_approve, x.amount, x.reason])));
    }
    if (r.examples.length) {
      panel.appendChild(el('h3', { text: 'Examples' }));
      panel.appendChild(table(['Authorization', 'Before', 'After'],
        r.examples.map((e) => [el('span', { class: 'mono', text: e.authorization }), outcome(e.before), outcome(e.after)])));
    }
    panel.appendChild(el('p', { class: 'muted', text: 'Same replay as `cardgate backtest`; proposed version ' + set.proposed_version + ', live ' + set.live_version + '.' }));
  }

  function overrideView(o) {
    const limits = (s) => (s && s.spending_limits && s.spending_limits.length) ? s.spending_limits.map((l) => (l.amount / 100).toFixed(2) + ' ' + l.interval).join(', ') : '—';
    const list = (v) => (v && v.length) ? v.join(', ') : '—';
    const out = [el('h3', { text: 'Control override for ' + o.scope + ' ' + o.id })];
    out.push(table(['', 'Proposed', 'In force now'], [
      ['Spending limits', limits(o.proposed), limits(o.current)],
      ['Blocked categories', list(o.proposed.blocked_categories), list(o.current && o.current.blocked_categories)],
      ['Blocked merchant countries', list(o.proposed.blocked_merchant_countries), list(o.current && o.current.blocked_merchant_countries)],
    ]));
    if (o.clears) out.push(el('p', { class: 'muted', text: 'Empty: approving clears the override.' }));
    out.push(el('h3', { text: 'Recent decisions it would change' }));
    if (!o.recent_decisions.length) out.push(el('p', { class: 'muted', text: 'No recorded decisions for this ' + o.scope + '.' }));
    else out.push(table(['Decided', 'Authorization', 'Card', 'Merchant', 'Amount', 'Was', 'With the override'],
      o.recent_decisions.map((d) => [when(d.decided_at), el('span', { class: 'mono', text: d.authorization }), el('span', { class: 'mono', text: d.card }), d.merchant,
        money(d.amount, d.currency), badge(d.approved ? 'approve' : 'decline'),
        d.would_decline ? badge('decline (' + d.would_decline + ')', 'decline') : el('span', { class: 'muted', text: 'unchanged' })])));
    return out;
  }

  function allowanceView(a) {
    const out = [el('h3', { text: 'Authorization allowance' })];
    const details = a.details || {};
    out.push(facts([
      ['Card', el('span', { class: 'mono', text: a.card })],
      ['Merchant', a.merchant + (details.name ? ' · ' + details.name : '') + (details.country ? ' · ' + details.country : '') + (details.category ? ' · ' + details.category : '')],
      ['Amount', money(a.amount, a.currency)],
      ['Authorization', a.authorization || '—'],
      ['Review rule', a.rule || '—'],
    ]));
    out.push(el('h3', { text: 'Decision it changes' }));
    const d = a.declined_decision;
    if (d) {
      out.push(el('p', {}, 'Recorded ', when(d.decided_at), ': ', badge(d.approved ? 'approve' : 'decline'), ' ',
        el('span', { class: 'mono', text: d.reason + (d.rule ? ' · ' + d.rule : '') }), ' — ', money(d.amount, d.currency), ' at ', d.merchant || ''));
    }
    out.push(el('p', {}, 'If approved: ', badge('approve'), ' ' + a.effect + '.'));
    return out;
  }

  async function load(r, days) {
    const subject = $('d-subject');
    subject.replaceChildren();
    show('d-backtest', false);
    let v;
    try {
      v = await api('GET', '/v1/approval_requests/' + encodeURIComponent(r.id) + '/review' + (days ? '?days=' + days : ''));
    } catch (e) {
      subject.appendChild(el('p', { class: 'error', text: 'What this request changes could not be loaded: ' + e.message }));
      subject.appendChild(el('h3', { text: 'Parameters' }));
      subject.appendChild(el('pre', { text: JSON.stringify(r.params, null, 2) }));
      return;
    }
    if (v.ruleset) {
      if (v.list) {
        subject.appendChild(el('h3', { text: 'List ' + v.list.name + ' becomes' }));
        subject.appendChild(el('pre', { text: JSON.stringify(v.list.values) }));
      }
      subject.appendChild(el('h3', { text: 'Rules file: proposed against live' }));
      if (v.ruleset.diff) subject.append(...diffView(v.ruleset.diff));
      backtestPanel(v.ruleset);
    } else if (v.override) {
      subject.append(...overrideView(v.override));
    } else if (v.allowance) {
      subject.append(...allowanceView(v.allowance));
    } else {
      subject.appendChild(el('h3', { text: 'What will run' }));
      subject.appendChild(el('pre', { text: JSON.stringify(r.params, null, 2) }));
    }
  }

  window.cardgateCurrent = () => current;
  window.cardgateReview = { load };
})();
