// meshpay issuer console: the little behaviour its pages need, with no framework and nothing
// from another origin. Forms marked data-post send their fields as JSON with the session's
// CSRF token; the lists #feed and #alerts, and #conserved, follow the live feed (server-sent
// events from /console/events). Text only: nothing received is ever inserted as markup.
'use strict';
(() => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : '';
  const MAX_FEED = 100;

  const pad = (n) => String(n).padStart(2, '0');
  const when = (at) => {
    const d = new Date(at * 1000);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
  };
  const timeEl = (at) => {
    const t = document.createElement('time');
    t.dateTime = new Date(at * 1000).toISOString().slice(0, 19) + 'Z';
    t.textContent = when(at);
    return t;
  };
  const say = (el, text, bad) => {
    if (!el) {
      if (bad) window.alert(text);
      return;
    }
    el.textContent = text;
    el.classList.toggle('error', Boolean(bad));
  };
  const signIn = () => window.location.assign('/console/login');

  // The same sentences as the server writes (html.rs, describe).
  const describe = (e) => {
    switch (e.kind) {
      case 'upload':
        return [e.at, `upload from ${e.source}: ${e.records} records, ${e.settled} settled, ` +
          `${e.rejected} refused, ${e.unopened} unopened`];
      case 'receipt':
        return [e.at, `receipt ${String(e.record).slice(0, 16)}…: ${e.status}, ${e.amount} to ` +
          `${e.payee} under allowance ${e.allowance}`];
      case 'fraud':
        return [e.at, `fraud: allowance ${e.allowance} of holder ${e.holder} is forked`];
      case 'alert':
        return [e.since, `alert ${e.rule}: ${e.subject} — ${e.detail}`];
      default:
        return null;
    }
  };

  // Forms that change something: JSON, with the CSRF token.
  document.addEventListener('submit', async (ev) => {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.post) return;
    ev.preventDefault();
    const body = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled) continue;
      if ((el.type === 'radio' || el.type === 'checkbox') && !el.checked) continue;
      body[el.name] = el.hasAttribute('data-number') ? Number(el.value) : el.value.trim();
    }
    const status = form.querySelector('.status');
    const buttons = form.querySelectorAll('button');
    buttons.forEach((b) => { b.disabled = true; });
    say(status, 'Working…');
    try {
      const r = await fetch(form.dataset.post, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'Accept': 'application/json',
          'X-CSRF-Token': csrf },
        body: JSON.stringify(body),
      });
      if (r.ok) {
        const then = form.dataset.then;
        if (then) {
          window.location.assign(then.replace('{device}', encodeURIComponent(body.device || '')));
          return;
        }
        say(status, 'Done.');
      } else if (r.status === 401) {
        signIn();
        return;
      } else {
        let message = `Refused (HTTP ${r.status}).`;
        try {
          const j = await r.json();
          if (j && j.error) message = `Refused: ${j.error}.`;
        } catch (_) { /* not JSON */ }
        say(status, message, true);
      }
    } catch (_) {
      say(status, 'The server could not be reached. Check the statement before trying again.', true);
    }
    buttons.forEach((b) => { b.disabled = false; });
  });

  const feed = document.getElementById('feed');
  const alerts = document.getElementById('alerts');
  const conserved = document.getElementById('conserved');
  const live = document.getElementById('live');
  if (!feed && !alerts && !conserved) return;

  const getJson = async (path) => {
    const r = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (r.status === 401) {
      signIn();
      throw new Error('signed out');
    }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    return r.json();
  };

  // Runs `f` at most once per `ms`, coalescing the calls in between.
  const throttled = (ms, f) => {
    let waiting = false;
    return () => {
      if (waiting) return;
      waiting = true;
      window.setTimeout(() => { waiting = false; f().catch(() => {}); }, ms);
    };
  };

  const addToFeed = (e) => {
    const d = describe(e);
    if (!d || !feed) return;
    const li = document.createElement('li');
    li.dataset.kind = e.kind;
    li.append(timeEl(d[0]), ' ', d[1]);
    feed.prepend(li);
    while (feed.children.length > MAX_FEED) feed.lastElementChild.remove();
    const empty = document.getElementById('feed-empty');
    if (empty) empty.hidden = true;
  };

  const refreshAlerts = throttled(500, async () => {
    const report = await getJson('/console/api/risk');
    if (alerts) {
      const max = Number(alerts.dataset.max) || 100;
      const items = report.alerts.slice(0, max).map((a) => {
        const li = document.createElement('li');
        li.dataset.rule = a.rule;
        const rule = document.createElement('strong');
        rule.textContent = a.rule;
        const subject = document.createElement('span');
        subject.className = 'subject';
        subject.textContent = a.subject;
        const since = document.createElement('span');
        since.className = 'since';
        since.append('since ', timeEl(a.since));
        li.append(rule, ' ', subject, ` — ${a.detail} `, since);
        return li;
      });
      alerts.replaceChildren(...items);
      const none = document.getElementById('no-alerts');
      if (none) none.hidden = items.length > 0;
    }
    for (const el of document.querySelectorAll('[data-count]')) {
      const n = report.counts[el.dataset.count];
      if (n !== undefined) el.textContent = String(n);
    }
  });

  // Minor units with thousands grouped, as the server writes them (html.rs, amount).
  const grouped = (n) => {
    const digits = String(Math.abs(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
    return n < 0 ? `\u2212${digits}` : digits;
  };

  const refreshBooks = throttled(2000, async () => {
    if (!conserved) return;
    const books = await getJson('/console/api/reconciliation');
    conserved.textContent = `conserved: ${books.conserved}`;
    conserved.className = books.conserved ? 'ok' : 'bad';
    const word = document.getElementById('conserved-text');
    if (word) {
      word.textContent = books.conserved ? 'The books balance'
        : 'The books do not balance: investigate before settling more';
    }
    for (const el of document.querySelectorAll('[data-book]')) {
      const value = el.dataset.book.split('.').reduce((o, k) => (o == null ? o : o[k]), books);
      if (typeof value === 'number') el.textContent = grouped(value);
    }
  });

  // The feed's recent events, newest first, in place of what the list shows.
  const reloadFeed = async () => {
    if (!feed) return;
    const recent = await getJson('/console/api/feed');
    feed.replaceChildren();
    for (const e of recent.events) addToFeed(e);
  };

  let retry = 1000;
  const connect = () => {
    const es = new EventSource('/console/events');
    // On every (re)connect: what happened while disconnected is caught up on.
    es.onopen = () => {
      retry = 1000;
      say(live, 'Live: connected.');
      refreshAlerts();
      refreshBooks();
      reloadFeed().catch(() => {});
    };
    es.onmessage = (m) => {
      let e;
      try { e = JSON.parse(m.data); } catch (_) { return; }
      addToFeed(e);
      if (e.kind === 'alert' || e.kind === 'fraud') refreshAlerts();
      if (e.kind === 'upload' || e.kind === 'fraud') refreshBooks();
    };
    es.onerror = () => {
      if (es.readyState !== EventSource.CLOSED) {
        say(live, 'Live: reconnecting…');
        return;
      }
      // Refused (signed out, or too many streams): check the session, then try again later.
      say(live, 'Live: disconnected; trying again shortly.');
      getJson('/console/api/feed').catch(() => {});
      window.setTimeout(connect, retry);
      retry = Math.min(retry * 2, 60000);
    };
  };
  connect();
})();
