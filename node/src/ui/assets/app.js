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

async function call(req) {
  return post({ call: req });
}

async function post(body) {
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
  // Requests shown before the current one (a payment to an older QR code is still shown).
  earlier: [],
  timer: null,
  poll: null,
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
    clearInterval(this.poll);
    if (this.nonce) this.earlier = [this.nonce, ...this.earlier].slice(0, 8);
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
      const ask = $('#ask');
      if (ask.disabled) return;
      ask.disabled = true;
      try {
        const memo = $('#memo').value.trim();
        const r = await call({ cmd: 'request', amount, memo: memo || null });
        this.nonce = r.nonce;
        $('#req-expires').textContent = 'Open until ' + when(r.expires) + '.';
        // The event stream says when it is paid; a gap in the stream is covered by asking.
        clearInterval(this.poll);
        this.poll = setInterval(() => this.resync(), 5000);
        $('#req-amount').textContent = money(r.amount, r.currency);
        $('#req-memo').textContent = r.memo;
        $('#qr').src = '/qr.svg?text=' + encodeURIComponent(r.text);
        $('#request-text').value = r.text;
        $('#waiting').textContent = 'Waiting for the payment…';
        say('');
        this.show('request-view');
      } catch (e) {
        say(e.message, true);
      } finally {
        ask.disabled = false;
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
  paid(p, earlier) {
    clearInterval(this.poll);
    if (!earlier) this.nonce = null;
    $('#paid-title').textContent = (earlier ? 'An earlier request was paid: ' : 'Paid ') + money(p.amount);
    $('#paid-detail').textContent = 'from ' + shortKey(p.payer) + ', counter ' + p.counter + ', at ' + when(p.at);
    this.show('paid-view');
    $('#next').focus();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.reset(), 15000);
  },
  notice(n) {
    if (n.event === 'received' && this.nonce && n.nonce === this.nonce) {
      this.paid(n, false);
    } else if (n.event === 'received' && this.earlier.includes(n.nonce)) {
      this.earlier = this.earlier.filter((x) => x !== n.nonce);
      this.paid(n, true);
    } else if (n.event === 'refused') {
      say('A payment was refused: ' + n.reason.replace(/_/g, ' '), true);
    }
  },
  // Asks the node whether the request on screen was paid (after a gap in the event stream).
  async resync() {
    const nonce = this.nonce;
    if (!nonce) return;
    try {
      const got = await get('received?nonce=' + encodeURIComponent(nonce));
      if (got.length && this.nonce === nonce) {
        const h = got[0];
        this.paid({ amount: h.amount, payer: h.counterparty, counter: h.counter, at: h.time }, false);
      }
    } catch (e) {
      say(e.message, true);
    }
  },
  load() {
    return this.resync();
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
    if (['received', 'sent', 'settled', 'refused'].includes(n.event)) reload(this);
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
    if (n.event === 'alert') reload(this);
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
  shown: null,
  // First step: show what the request asks for; nothing is paid yet.
  async check(ev) {
    ev.preventDefault();
    const out = $('#pay-result');
    out.classList.remove('bad');
    out.textContent = '';
    try {
      const r = await get('decode?text=' + encodeURIComponent($('#pay-request').value.trim()));
      this.shown = { text: r.text, amount: r.amount, payee: r.payee };
      $('#confirm-amount').textContent = money(r.amount, r.currency);
      $('#confirm-payee').textContent = r.payee;
      $('#confirm-memo').textContent = r.memo || '(no memo)';
      $('#confirm-expires').textContent = when(r.expires);
      $('#pay-confirm').hidden = false;
      $('#confirm-pay').focus();
    } catch (e) {
      out.textContent = e.message;
      out.classList.add('bad');
    }
  },
  cancel() {
    this.shown = null;
    $('#pay-confirm').hidden = true;
    $('#secret').value = '';
  },
  // Second step: pay exactly what was shown.
  async pay() {
    const shown = this.shown;
    if (!shown) return;
    const secret = $('#secret').value;
    const out = $('#pay-result');
    const button = $('#confirm-pay');
    if (button.disabled) return;
    button.disabled = true;
    out.classList.remove('bad');
    out.textContent = 'Paying…';
    try {
      const req = { cmd: 'pay', request: shown.text };
      const body = { call: req, shown: { amount: shown.amount, payee: shown.payee } };
      if (secret) body.secret = secret;
      const o = await post(body);
      $('#secret').value = '';
      this.cancel();
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
    } finally {
      button.disabled = false;
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
    try {
      video.srcObject = stream;
      video.hidden = false;
      await video.play();
      const detector = new window.BarcodeDetector({ formats: ['qr_code'] });
      const until = Date.now() + 30000;
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
    $('#pay-form').addEventListener('submit', (ev) => this.check(ev));
    $('#confirm-pay').addEventListener('click', () => this.pay());
    $('#cancel-pay').addEventListener('click', () => this.cancel());
    $('#topup-form').addEventListener('submit', (ev) => this.topup(ev));
    if (CONFIRM_ABOVE === 0) $('#secret-row').hidden = false;
    if ('BarcodeDetector' in window && navigator.mediaDevices) {
      $('#scan').hidden = false;
      $('#scan').addEventListener('click', () => this.scan());
    }
  },
  notice(n) {
    if (['received', 'sent', 'settled', 'alert'].includes(n.event)) reload(this);
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
    if (['peers', 'synced', 'gateway', 'received'].includes(n.event)) reload(this);
  },
};

const screens = { pos, today, alerts: alertsPage, wallet, mesh };

// Reads the screen's data again, at most once a second however many notices come.
let reloading = null;
function reload(screen) {
  if (!screen || !screen.load || reloading) return;
  reloading = setTimeout(() => {
    reloading = null;
    screen.load().catch((e) => say(e.message, true));
  }, 1000);
}

// The event stream: notices as they happen; after any gap (a reconnect, or notices the node
// skipped for a slow page) the screen reads its data again.
function live(screen, delay) {
  const source = new EventSource('/events');
  let opened = false;
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
  source.addEventListener('resync', () => {
    refreshAlertCount();
    reload(screen);
  });
  source.onopen = () => {
    if (opened || delay) reload(screen);
    opened = true;
    delay = 0;
  };
  source.onerror = async () => {
    if (source.readyState !== EventSource.CLOSED) return;
    // The browser gave up (the node restarted, refused, or is busy): find out why.
    try {
      await get('id');
    } catch (e) {
      if (e.kind === 'unauthorized') {
        say('This browser is no longer paired: open a new link from `meshpay pair`.', true);
        return;
      }
    }
    const next = Math.min((delay || 1000) * 2, 30000);
    setTimeout(() => live(screen, next), next);
  };
}

function start() {
  const screen = screens[page];
  if (!screen) return;
  if (screen.init) screen.init();
  // The screen's controls answer from now on.
  document.body.dataset.ready = 'yes';
  // Marked once the screen's data is in (its layout no longer moves).
  const loaded = screen.load ? screen.load() : Promise.resolve();
  loaded.then(() => { document.body.dataset.loaded = 'yes'; }, (e) => say(e.message, true));
  refreshAlertCount();
  live(screen, 0);
}

start();
