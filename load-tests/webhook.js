// k6 load test of POST /webhooks/stripe: realistic, signed
// `issuing_authorization.request` events, every answer checked to be a decision.
//
// Environment (all optional except TARGET):
//   TARGET          base URL, e.g. http://127.0.0.1:8080
//   SECRET          webhook secret used to sign (default: the bundled example secret)
//   SCENARIO        max | rate | soak                       (default: max)
//   VUS             virtual users for `max`                 (default: 32)
//   DURATION        duration of `max` and `rate`            (default: 15s)
//   RATE            requests/s for `rate` and `soak`; or give MAX_RPS and RATE_PCT
//   MAX_RPS         a measured max throughput …
//   RATE_PCT        … and the share of it to offer, in %   (default: 50)
//   SOAK_DURATION   duration of `soak`                      (default: 10m)
//   PARTIAL_SHARE   share of partial-approval cases         (default: 0.10)
//   DECLINE_SHARE   share of decline cases                  (default: 0.10)
//   POOL            pre-built cases per VU                  (default: 200)
//   CHECK_OUTCOME   1: check each answer matches the case; 0: only that it is a
//                   valid decision (the baseline's fixed approval)  (default: 1)
//
// Thresholds fail the run on any HTTP error, any failed check, or any
// `fallback:` reason.
//
// Example: k6 run -e TARGET=http://127.0.0.1:8080 -e SCENARIO=rate -e RATE=500 load-tests/webhook.js

import http from 'k6/http';
import crypto from 'k6/crypto';
import { check } from 'k6';
import { Counter, Rate } from 'k6/metrics';
import exec from 'k6/execution';

const TARGET = __ENV.TARGET || 'http://127.0.0.1:8080';
const SECRET = __ENV.SECRET || 'whsec_cardgate_example_secret_do_not_use_in_production';
const SCENARIO = __ENV.SCENARIO || 'max';
const DURATION = __ENV.DURATION || '15s';
const PARTIAL_SHARE = parseFloat(__ENV.PARTIAL_SHARE || '0.10');
const DECLINE_SHARE = parseFloat(__ENV.DECLINE_SHARE || '0.10');
const CHECK_OUTCOME = (__ENV.CHECK_OUTCOME || '1') === '1';

function offeredRate() {
  if (__ENV.RATE) return Math.max(1, Math.round(parseFloat(__ENV.RATE)));
  if (__ENV.MAX_RPS) {
    const pct = parseFloat(__ENV.RATE_PCT || '50');
    return Math.max(1, Math.round((parseFloat(__ENV.MAX_RPS) * pct) / 100));
  }
  throw new Error('SCENARIO=rate/soak needs RATE, or MAX_RPS (and RATE_PCT)');
}

function scenarios() {
  if (SCENARIO === 'max') {
    return {
      max: { executor: 'constant-vus', vus: parseInt(__ENV.VUS || '32', 10), duration: DURATION },
    };
  }
  if (SCENARIO === 'rate' || SCENARIO === 'soak') {
    const rate = offeredRate();
    return {
      [SCENARIO]: {
        executor: 'constant-arrival-rate',
        rate,
        timeUnit: '1s',
        duration: SCENARIO === 'soak' ? __ENV.SOAK_DURATION || '10m' : DURATION,
        // Latency at a fixed rate is only honest if k6 never runs out of VUs.
        preAllocatedVUs: Math.min(200, Math.max(8, Math.ceil(rate / 50))),
        maxVUs: 400,
      },
    };
  }
  throw new Error(`unknown SCENARIO ${SCENARIO}: use max, rate or soak`);
}

export const fallbacks = new Counter('cardgate_fallback_answers');
export const invalidDecisions = new Rate('invalid_decisions');

export const options = {
  scenarios: scenarios(),
  discardResponseBodies: false,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
  thresholds: {
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
    invalid_decisions: ['rate==0'],
    cardgate_fallback_answers: ['count==0'],
  },
};

// --- realistic data -------------------------------------------------------------

// Merchant categories with their MCCs (Stripe's table), weighted towards everyday spend.
const CATEGORIES = [
  ['eating_places_restaurants', '5812'], ['fast_food_restaurants', '5814'],
  ['grocery_stores_supermarkets', '5411'], ['service_stations', '5541'],
  ['automated_fuel_dispensers', '5542'], ['computer_software_stores', '5734'],
  ['airlines_air_carriers', '4511'], ['hotels_motels_and_resorts', '7011'],
  ['taxicabs_limousines', '4121'], ['book_stores', '5942'],
  ['drug_stores_and_pharmacies', '5912'], ['electronics_stores', '5732'],
  ['digital_goods_applications', '5817'], ['advertising_services', '7311'],
  ['computer_network_services', '4816'], ['caterers', '5811'],
  ['parking_lots_garages', '7523'], ['bus_lines', '4131'],
  ['office_and_commercial_furniture', '5021'],
  ['stationery_stores_office_and_school_supply_stores', '5943'],
];
const MERCHANTS = [
  ['PIXELFORGE SOFTWARE', 'San Francisco', 'US', '94107', 'CA'],
  ['CAFE LUMEN', 'Portland', 'US', '97205', 'OR'],
  ['NORTHSIDE GROCERY', 'Chicago', 'US', '60614', 'IL'],
  ['BLUE MESA FUEL', 'Denver', 'US', '80202', 'CO'],
  ['HARBOR HOTEL', 'Boston', 'US', '02110', 'MA'],
  ['METRO TAXI', 'New York', 'US', '10001', 'NY'],
  ['PAGE & QUILL', 'London', 'GB', 'EC1A 1BB', ''],
  ['LE PETIT BISTRO', 'Paris', 'FR', '75001', ''],
  ['TECHHAUS', 'Berlin', 'DE', '10115', ''],
  ['MAPLE PHARMACY', 'Toronto', 'CA', 'M5H 2N2', 'ON'],
];
const METHODS = ['online', 'chip', 'contactless', 'swipe', 'keyed_in'];
const PRESENCE = { online: 'not_present', keyed_in: 'not_present' };
const FIRST = ['Dana', 'Ari', 'Sam', 'Lee', 'Noor', 'Kai', 'Maya', 'Jon', 'Ines', 'Tomas'];
const LAST = ['Reyes', 'Okafor', 'Chen', 'Novak', 'Haddad', 'Silva', 'Kim', 'Berg'];
const CARDS = 5000;
const CARDHOLDERS = 1200;

function pick(a) {
  return a[Math.floor(Math.random() * a.length)];
}
function intBetween(lo, hi) {
  return lo + Math.floor(Math.random() * (hi - lo + 1));
}
function rid(prefix, n) {
  return prefix + String(n).padStart(12, '0') + 'Lk8vT3cG';
}
// Everyday amounts: mostly small, a long tail up to $5,000 (below the program's
// $10,000 per-authorization limit in config/cardgate.toml).
function amount() {
  const r = Math.random();
  if (r < 0.6) return intBetween(150, 6000);
  if (r < 0.9) return intBetween(6000, 50000);
  return intBetween(50000, 500000);
}

function spendingControls(over) {
  return Object.assign(
    {
      allowed_card_presences: null, allowed_categories: null, allowed_merchant_countries: null,
      blocked_card_presences: null, blocked_categories: null, blocked_merchant_countries: null,
      spending_limits: [], spending_limits_currency: null,
    },
    over || {},
  );
}

// config/rules.toml's `lists.fuel_mccs`.
const FUEL_MCCS = ['5542', '5541'];
const NON_FUEL = CATEGORIES.filter(([, mcc]) => !FUEL_MCCS.includes(mcc));

// One case: `approve`, `partial` (controllable amount above a per_authorization limit)
// or `decline` (a blocked category or an inactive card).
export function makeCase() {
  const r = Math.random();
  const kind = r < PARTIAL_SHARE ? 'partial' : r < PARTIAL_SHARE + DECLINE_SHARE ? 'decline' : 'approve';
  const controllable = kind === 'partial' || Math.random() < 0.2;
  // The bundled config/rules.toml caps controllable fuel authorizations (rule
  // `cap-fuel`); controllable cases keep away from fuel MCCs so their expected
  // outcome is the controls' alone, and fuel cases are never controllable.
  const [category, mcc] = pick(controllable ? NON_FUEL : CATEGORIES);
  const [mname, city, country, postal, state] = pick(MERCHANTS);
  const method = pick(METHODS);
  const cardN = intBetween(1, CARDS);
  const holderN = cardN % CARDHOLDERS;
  const first = FIRST[holderN % FIRST.length];
  const last = LAST[holderN % LAST.length];
  let amt = amount();
  let cardStatus = 'active';
  let cardControls = spendingControls();
  let expect = { approved: true, reason: 'approved' };
  if (kind === 'partial') {
    amt = intBetween(20000, 400000);
    const limit = intBetween(1000, amt - 1);
    cardControls = spendingControls({
      spending_limits: [{ amount: limit, categories: null, interval: 'per_authorization' }],
      spending_limits_currency: 'usd',
    });
    expect = { approved: true, reason: 'spending_limit', amount: limit };
  } else if (kind === 'decline') {
    if (Math.random() < 0.5) {
      cardControls = spendingControls({ blocked_categories: [category] });
      expect = { approved: false, reason: 'category_blocked' };
    } else {
      cardStatus = 'inactive';
      expect = { approved: false, reason: 'card_inactive' };
    }
  }
  const now = Math.floor(Date.now() / 1000);
  const event = {
    id: '__EVT__',
    object: 'event',
    api_version: '2026-10-28.endive',
    created: now,
    data: {
      object: {
        id: '__IAUTH__',
        object: 'issuing.authorization',
        amount: 0,
        amount_details: { atm_fee: null, cashback_amount: null },
        approved: false,
        authorization_method: method,
        balance_transactions: [],
        card: {
          id: rid('ic_', cardN),
          object: 'issuing.card',
          brand: 'Visa',
          cancellation_reason: null,
          cardholder: {
            id: rid('ich_', holderN),
            object: 'issuing.cardholder',
            billing: {
              address: {
                city: 'San Francisco', country: 'US', line1: '510 Townsend St',
                line2: null, postal_code: '94103', state: 'CA',
              },
            },
            company: null,
            created: now - 86400 * 90,
            email: `${first.toLowerCase()}.${last.toLowerCase()}@example.com`,
            individual: {
              dob: { day: 14, month: 3, year: 1989 }, first_name: first, last_name: last,
              verification: { document: { back: null, front: null } },
            },
            livemode: false,
            metadata: { employee_id: `E-${10000 + holderN}` },
            name: `${first} ${last}`,
            phone_number: '+14155550142',
            preferred_locales: ['en'],
            requirements: { disabled_reason: null, past_due: [] },
            spending_controls: spendingControls({
              allowed_categories: [], allowed_merchant_countries: [], blocked_categories: [],
              blocked_merchant_countries: [],
              // Present so every request computes an interval total from the ledger,
              // but far above what any benchmark or soak spends on one cardholder:
              // a limit that binds would make the expected outcome depend on
              // earlier requests.
              spending_limits: [{ amount: 10000000000, categories: null, interval: 'monthly' }],
              spending_limits_currency: 'usd',
            }),
            status: 'active',
            type: 'individual',
          },
          created: now - 86400 * 60,
          currency: 'usd',
          exp_month: 9,
          exp_year: 2029,
          last4: String(1000 + (cardN % 9000)),
          latest_fraud_warning: null,
          lifecycle_controls: null,
          livemode: false,
          metadata: { cost_center: pick(['eng-tools', 'sales', 'ops', 'marketing']) },
          personalization_design: null,
          replaced_by: null,
          replacement_for: null,
          replacement_reason: null,
          second_line: null,
          shipping: null,
          spending_controls: cardControls,
          status: cardStatus,
          type: method === 'online' ? 'virtual' : 'physical',
          wallets: {
            apple_pay: { eligible: true, ineligible_reason: null },
            google_pay: { eligible: true, ineligible_reason: null },
            primary_account_identifier: null,
          },
        },
        card_presence: PRESENCE[method] || 'present',
        cardholder: rid('ich_', holderN),
        created: now,
        currency: 'usd',
        fleet: null,
        fuel: null,
        livemode: false,
        merchant_amount: 0,
        merchant_currency: 'usd',
        merchant_data: {
          category, category_code: mcc, city, country, name: mname,
          network_id: String(1000000000 + intBetween(0, 99999)), postal_code: postal,
          state, tax_id: null, terminal_id: null, url: null,
        },
        metadata: {},
        network_data: null,
        pending_request: {
          amount: amt,
          amount_details: { atm_fee: null, cashback_amount: null },
          currency: 'usd',
          is_amount_controllable: controllable,
          merchant_amount: amt,
          merchant_currency: 'usd',
          network_risk_score: intBetween(1, 60),
        },
        request_history: [],
        status: 'pending',
        token: null,
        transactions: [],
        verification_data: {
          address_line1_check: 'not_provided', address_postal_code_check: 'match',
          authentication_exemption: null, cvc_check: 'match', expiry_check: 'match',
          postal_code: null, three_d_secure: null,
        },
        wallet: null,
      },
    },
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type: 'issuing_authorization.request',
  };
  return { template: JSON.stringify(event), expect };
}

// Building a 5 KiB event in JavaScript costs k6 more CPU than cardgate spends
// deciding it, and both share the box: each VU builds a pool of cases once, then
// only stamps unique ids in and signs per request.
const POOL = Array.from({ length: parseInt(__ENV.POOL || '200', 10) }, makeCase);

// A unique id per request: VU number and iteration.
function uniqueId(prefix) {
  return `${prefix}${exec.vu.idInTest}x${exec.vu.iterationInInstance}Lk8vT3cG`;
}

// Stripe's scheme: HMAC-SHA256 keyed with the whole whsec_ string over "{t}.{body}".
export function sign(body, secret) {
  const t = Math.floor(Date.now() / 1000);
  return `t=${t},v1=${crypto.hmac('sha256', secret, `${t}.${body}`, 'hex')}`;
}

function validDecision(d) {
  return (
    d !== null && typeof d === 'object' && typeof d.approved === 'boolean' &&
    typeof d.metadata === 'object' && d.metadata !== null &&
    typeof d.metadata.reason === 'string' &&
    (d.amount === undefined || (Number.isInteger(d.amount) && d.amount >= 0))
  );
}

export default function () {
  const { template, expect } = POOL[exec.vu.iterationInInstance % POOL.length];
  const body = template
    .replace('"__EVT__"', `"${uniqueId('evt_')}"`)
    .replace('"__IAUTH__"', `"${uniqueId('iauth_')}"`);
  const res = http.post(`${TARGET}/webhooks/stripe`, body, {
    headers: { 'Content-Type': 'application/json', 'Stripe-Signature': sign(body, SECRET) },
  });
  let d = null;
  try {
    d = res.json();
  } catch (_) {
    d = null;
  }
  const valid = res.status === 200 && validDecision(d);
  invalidDecisions.add(!valid);
  if (valid && d.metadata.reason.startsWith('fallback:')) fallbacks.add(1);
  const checks = {
    'status 200': (r) => r.status === 200,
    'valid decision': () => valid,
    'not a fallback': () => valid && !d.metadata.reason.startsWith('fallback:'),
  };
  if (CHECK_OUTCOME) {
    checks['expected outcome'] = () =>
      valid && d.approved === expect.approved && d.metadata.reason === expect.reason &&
      (expect.amount === undefined || d.amount === expect.amount);
  }
  check(res, checks);
}
