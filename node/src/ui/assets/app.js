// meshpay web app: fills each screen from the node's control API (the same JSON as
// `meshpay … --json`) and keeps it current from the node's event stream. No library, no
// request to any other origin.
'use strict';

const $ = (sel, root) => (root || document).querySelector(sel);
const page = document.body.dataset.page;
const CUR = document.body.dataset.currency || '';
const CONFIRM_ABOVE = Number(document.body.dataset.confirmAbove || 0);
const csrfMeta = document.querySelector('meta[name="csrf-token"]');
const CSRF = csrfMeta ? csrfMeta.content : '';

class ApiError extends Error {
  constructor(answer) {
    super(answer.error || 'the node refused');
    this.kind = answer.kind || 'input';
  }
}

// Amounts are minor units; shown with two decimals.
function money(n, cur) {
  const v = Number(n || 0);
  const whole = Math.floor(v / 100);
  const cents = String(v % 100).padStart(2, '0');
  return whole.toLocaleString('en') + '.' + cents + ' ' + (cur || CUR);
}

function bytes(n) {
  const v = Number(n || 0);
  if (v < 1024) return v + ' B';
  if (v < 1048576) return (v / 1024).toFixed(1) + ' KiB';
  return (v / 1048576).toFixed(1) + ' MiB';
}

function when(t) {
  return t ? new Date(t * 1000).toLocaleString() : '';
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function shortKey(k) {
  return k && k.length > 16 ? k.slice(0, 10) + '…' + k.slice(-4) : (k || '');
}

// An element with text content (never HTML from data).
function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el('td', c));
  return tr;
}

function fill(tbodySel, rows) {
  const tb = $(tbodySel);
  tb.replaceChildren(...rows);
}

function say(msg, bad) {
  const s = $('#status');
  s.textContent = msg || '';
  s.classList.toggle('bad', !!bad);
}

async function get(name) {
  const r = await fetch('/api/' + name, { credentials: 'same-origin' });
  const j = await r.json();
  if (!j.ok) throw new ApiError(j);
  return j.data;
}

async function call(req, secret) {
  const body = secret ? { call: req, secret } : { call: req };
  const r = await fetch('/api/call', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json', 'x-csrf-token': CSRF },
    body: JSON.stringify(body),
  });
  const j = await r.json();
  if (!j.ok) throw new ApiError(j);
  return j.data;
}

function settlementText(s) {
  return s || 'not yet';
}

function historyRows(items, time) {
  return items.map((h) => row([
    (time || when)(h.time),
    h.direction,
    money(h.amount, h.currency),
    shortKey(h.counterparty),
    h.status + (h.reason ? ': ' + h.reason : ''),
    settlementText(h.settlement),
  ]));
}

// ---- the alert count in the navigation, on every screen
async function refreshAlertCount() {
  try {
    const alerts = await get('alerts');
    const b = $('#alert-count');
    b.hidden = alerts.length === 0;
    b.textContent = String(alerts.length);
    b.setAttribute('aria-label', alerts.length + ' alerts');
  } catch (e) {
    say(e.message, true);
  }
}

// ---- take a payment
const pos = {
  nonce: null,
  timer: null,
  show(view) {
    for (const id of ['pad-view', 'request-view', 'paid-view']) $('#' + id).hidden = id !== view;
    document.body.classList.toggle('flash', view === 'paid-view');
  },
  digits() {
    return $('#amount').value.replace(/[^0-9]/g, '').replace(/^0+/, '');
  },
  shown() {
    $('#amount-shown').textContent = money(Number(this.digits() || 0));
  },
  reset() {
    clearTimeout(this.timer);
    this.nonce = null;
    $('#amount').value = '';
    $('#memo').value = '';
    this.shown();
    this.show('pad-view');
    $('#amount').focus();
  },
  init() {
    for (const c of document.querySelectorAll('.cur')) c.textContent = CUR;
    $('#amount').addEventListener('input', () => this.shown());
    for (const b of document.querySelectorAll('[data-key]')) {
      b.addEventListener('click', () => {
        const k = b.dataset.key;
        const a = $('#amount');
        if (k === 'clear') a.value = '';
        else if (k === 'back') a.value = a.value.slice(0, -1);
        else if (a.value.length < 12) a.value += k;
        this.shown();
      });
    }
    $('#pad').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const amount = Number(this.digits() || 0);
      if (!amount) {
        say('Type an amount first.', true);
        return;
      }
      try {
        const memo = $('#memo').value.trim();
        const r = await call({ cmd: 'request', amount, memo: memo || null });
        this.nonce = r.nonce;
        $('#req-amount').textContent = money(r.amount, r.currency);
        $('#req-memo').textContent = r.memo;
        $('#qr').src = '/qr.svg?text=' + encodeURIComponent(r.text);
        $('#request-text').value = r.text;
        $('#waiting').textContent = 'Waiting for the payment…';
        say('');
        this.show('request-view');
      } catch (e) {
        say(e.message, true);
      }
    });
    $('#cancel').addEventListener('click', () => this.reset());
    $('#next').addEventListener('click', () => this.reset());
    $('#copy').addEventListener('click', async () => {
      const t = $('#request-text');
      try {
        await navigator.clipboard.writeText(t.value);
      } catch (e) {
        t.select();
      }
      say('Request text copied.');
    });
    this.reset();
  },
  notice(n) {
    if (n.event === 'received' && this.nonce && n.nonce === this.nonce) {
      this.nonce = null;
      $('#paid-title').textContent = 'Paid ' + money(n.amount);
      $('#paid-detail').textContent = 'from ' + shortKey(n.payer) + ', counter ' + n.counter + ', at ' + when(n.at);
      this.show('paid-view');
      $('#next').focus();
      this.timer = setTimeout(() => this.reset(), 15000);
    } else if (n.event === 'refused') {
      say('A payment was refused: ' + n.reason, true);
    }
  },
};

// ---- today
const today = {
  start() {
    const d = new Date();
    d.setHours(0, 0, 0, 0);
    return Math.floor(d.getTime() / 1000);
  },
  async load() {
    const since = this.start();
    $('#csv').href = '/today.csv?since=' + since;
    const [history, refusals] = await Promise.all([get('history'), get('refusals')]);
    const items = history.filter((h) => h.time >= since);
    const refused = refusals.filter((r) => r.at >= since);
    fill('#refused tbody', refused.map((r) => row([clock(r.at), shortKey(r.payer), r.reason.replace(/_/g, ' ')])));
    $('#refused-empty').hidden = refused.length > 0;
    const totals = {};
    for (const h of items) {
      const t = totals[h.currency] || (totals[h.currency] = { received: 0, sent: 0, pending: 0, settled: 0 });
      if (h.direction === 'received') t.received += h.amount;
      else if (h.status === 'acked') t.sent += h.amount;
      else if (h.status === 'pending') t.pending += h.amount;
      if (h.settlement === 'settled') t.settled += h.amount;
    }
    fill('#totals tbody', Object.entries(totals).map(([c, t]) => row([
      c, money(t.received, c), money(t.sent, c), money(t.pending, c), money(t.settled, c),
    ])));
    fill('#today tbody', historyRows(items, clock));
    $('#today-empty').hidden = items.length > 0;
  },
  notice(n) {
    if (['received', 'sent', 'settled', 'refused'].includes(n.event)) this.load().catch((e) => say(e.message, true));
  },
};

// ---- alerts
const alertsPage = {
  async load() {
    const list = await get('alerts');
    const ul = $('#alerts');
    ul.replaceChildren(...list.map((a) => {
      const li = el('li', null, { 'data-kind': a.kind });
      li.appendChild(el('strong', a.kind.replace('_', ' ')));
      li.appendChild(el('span', ' ' + a.detail));
      if (a.at) li.appendChild(el('time', when(a.at)));
      return li;
    }));
    $('#alerts-empty').hidden = list.length > 0;
  },
  notice(n) {
    if (n.event === 'alert') this.load().catch((e) => say(e.message, true));
  },
};

// ---- wallet
const wallet = {
  async load() {
    const [balance, allowances, history] = await Promise.all([get('balance'), get('allowances'), get('history')]);
    fill('#balance tbody', Object.entries(balance).map(([c, b]) => row([
      c, money(b.spendable, c), money(b.sent_acked, c), money(b.sent_pending, c), money(b.received, c),
    ])));
    fill('#allowances tbody', allowances.map((a) => row([
      a.id.slice(0, 16) + '…', money(a.available, a.currency), money(a.limit, a.currency), a.counter,
      when(a.valid_until), a.retired ? 'retired' : (a.usable ? 'usable' : 'not usable now'),
    ])));
    fill('#history tbody', historyRows(history));
  },
  async pay(ev) {
    ev.preventDefault();
    const text = $('#pay-request').value.trim();
    const secret = $('#secret').value;
    const out = $('#pay-result');
    out.classList.remove('bad');
    out.textContent = 'Paying…';
    try {
      const o = await call({ cmd: 'pay', request: text }, secret || null);
      $('#secret').value = '';
      $('#secret-row').hidden = CONFIRM_ABOVE !== 0;
      if (o.status === 'acked') {
        out.textContent = 'Paid ' + money(o.amount, o.currency) + ' to ' + shortKey(o.payee) + ' (counter ' + o.counter + ', acknowledged).';
        $('#pay-request').value = '';
      } else if (o.status === 'pending') {
        out.textContent = 'Sent, not yet acknowledged: ' + (o.reason || '') + ' The wallet keeps re-sending it.';
      } else {
        out.textContent = 'Refused by the payee: ' + (o.reason || '');
        out.classList.add('bad');
      }
      await this.load();
    } catch (e) {
      out.textContent = e.message;
      out.classList.add('bad');
      if (e.kind === 'authorize') {
        $('#secret-row').hidden = false;
        $('#secret').focus();
      }
    }
  },
  async scan() {
    const video = $('#camera');
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' } });
    } catch (e) {
      say('No camera: paste the request text instead.', true);
      return;
    }
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
    const detector = new window.BarcodeDetector({ formats: ['qr_code'] });
    const until = Date.now() + 30000;
    try {
      while (Date.now() < until) {
        const codes = await detector.detect(video);
        if (codes.length) {
          $('#pay-request').value = codes[0].rawValue.toLowerCase();
          say('Request scanned: check it, then pay.');
          return;
        }
        await new Promise((r) => setTimeout(r, 300));
      }
      say('No QR code seen: paste the request text instead.', true);
    } finally {
      for (const t of stream.getTracks()) t.stop();
      video.hidden = true;
    }
  },
  async topup(ev) {
    ev.preventDefault();
    const out = $('#topup-result');
    out.classList.remove('bad');
    out.textContent = 'Asking the issuer…';
    try {
      const t = await call({
        cmd: 'topup', url: $('#topup-url').value.trim(), amount: Number($('#topup-amount').value),
        days: Number($('#topup-days').value), currency: null,
      });
      out.textContent = 'New allowance of ' + money(t.limit, t.currency) + ', valid until ' + when(t.valid_until) + '.';
      await this.load();
    } catch (e) {
      out.textContent = e.message;
      out.classList.add('bad');
    }
  },
  init() {
    $('#pay-form').addEventListener('submit', (ev) => this.pay(ev));
    $('#topup-form').addEventListener('submit', (ev) => this.topup(ev));
    if (CONFIRM_ABOVE === 0) $('#secret-row').hidden = false;
    if ('BarcodeDetector' in window && navigator.mediaDevices) {
      $('#scan').hidden = false;
      $('#scan').addEventListener('click', () => this.scan());
    }
  },
  notice(n) {
    if (['received', 'sent', 'settled', 'alert'].includes(n.event)) this.load().catch((e) => say(e.message, true));
  },
};

// ---- mesh
const mesh = {
  async load() {
    const [peers, m] = await Promise.all([get('peers'), get('mesh')]);
    $('#peers').replaceChildren(...peers.map((p) => el('li', shortKey(p.device_key) + ' over ' + (p.link === 'ble' ? 'Bluetooth LE' : 'Wi-Fi (' + p.link + ')') + ' at ' + p.address)));
    $('#peers-empty').hidden = peers.length > 0;
    const facts = [
      ['Bundles held', m.bundles + ' (' + bytes(m.bytes) + ' of ' + bytes(m.max_bytes) + ')'],
      ['Records waiting for a gateway', m.by_kind.record || 0],
      ['Receipts returned', m.by_kind.receipt || 0],
      ['Fraud proofs carried', m.by_kind.fraud_proof || 0],
      ['Settled records remembered', m.tombstones],
    ];
    $('#store').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', k), el('dd', v)]));
    const g = m.gateway;
    $('#gateway').textContent = !g ? 'No gateway round yet.'
      : g.round ? 'Last round with ' + g.url + ' at ' + when(g.at) + ': uploaded ' + g.round.uploaded + ', receipts ' + g.round.receipts + '.'
        : 'Last try with ' + g.url + ' at ' + when(g.at) + ' failed: ' + g.error;
    fill('#carried tbody', m.carried.map((c) => row([shortKey(c.taker), c.count, bytes(c.bytes), when(c.at)])));
  },
  init() {
    $('#sync').addEventListener('click', async () => {
      try {
        const s = await call({ cmd: 'sync' });
        say('Synced with ' + s.peers + ' peers: took ' + s.took + ', gave ' + s.gave + '.');
        await this.load();
      } catch (e) {
        say(e.message, true);
      }
    });
  },
  notice(n) {
    if (['peers', 'synced', 'gateway', 'received'].includes(n.event)) this.load().catch((e) => say(e.message, true));
  },
};

const screens = { pos, today, alerts: alertsPage, wallet, mesh };

function live(screen) {
  const source = new EventSource('/events');
  source.onmessage = (m) => {
    let n;
    try {
      n = JSON.parse(m.data);
    } catch (e) {
      return;
    }
    if (n.event === 'alert') refreshAlertCount();
    if (screen && screen.notice) screen.notice(n);
  };
  source.onopen = () => {
    if (screen && screen.load) screen.load().catch((e) => say(e.message, true));
  };
}

function start() {
  const screen = screens[page];
  if (!screen) return;
  if (screen.init) screen.init();
  if (screen.load) screen.load().catch((e) => say(e.message, true));
  refreshAlertCount();
  live(screen);
}

start();
