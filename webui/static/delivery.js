'use strict';
// A destination's page (#/destinations/3): its settings and delivery state, the actions of
// destinations.js (edit, pause, delete, rotate, test), what became of its events over time (a
// stacked bar chart with a legend, the totals, and the same numbers as a table), its issues with
// their request/response samples, its dead letters (replay, purge) and its recent outgoing
// payloads. The page refreshes itself every 5 s while it is shown (it can be turned off); a section
// is redrawn only when its data changed, so that focus and open samples stay where they are.

const Delivery = {
  periods: [
    { hours: 1, label: 'Last hour', granularity: 'minute' },
    { hours: 6, label: 'Last 6 hours', granularity: 'minute' },
    { hours: 24, label: 'Last 24 hours', granularity: 'hour' },
    { hours: 24 * 7, label: 'Last 7 days', granularity: 'hour' },
    { hours: 24 * 31, label: 'Last 31 days', granularity: 'day' },
  ],
  stepMs: { minute: 60e3, hour: 3600e3, day: 86400e3 },
  maxBars: 1500,
  refreshMs: 5000,
  deadLetterPage: 50,

  // The three groups the chart stacks, bottom to top, with how each is summed from the counters.
  groups: [
    { key: 'delivered', label: 'Delivered', detail: 'at the first attempt or after retries', sum: c => c.delivered + c.delivered_after_retry },
    { key: 'filtered', label: 'Filtered', detail: 'kept back by the consent or condition filter', sum: c => c.filtered_consent + c.filtered_condition },
    { key: 'failed', label: 'Failed', detail: 'rejected, retries ran out, or expired', sum: c => c.rejected + c.failed + c.expired },
  ],

  // when formats a bucket's start for its granularity, in local time.
  when(t, granularity) {
    const d = new Date(t);
    if (granularity === 'day') return d.toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
    return d.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  },

  // niceMax rounds a chart's top up to 2, 4, 6, 8 or 10 times a power of ten (at least 2), so
  // that the middle line, half of it, is a whole number of events too.
  niceMax(n) {
    if (n <= 2) return 2;
    const p = Math.pow(10, Math.floor(Math.log10(n)));
    for (const m of [1, 2, 4, 6, 8, 10]) if (m * p >= n) return m * p;
    return 10 * p;
  },

  // redraw replaces what box shows with render()'s nodes, giving the focus back to the element
  // of the same data-focus-key if the focus was inside box: a refresh must not lose the place of
  // someone using the keyboard.
  redraw(box, render) {
    const active = document.activeElement;
    const holder = active && box.contains(active) ? active.closest('[data-focus-key]') : null;
    const key = holder ? holder.dataset.focusKey : null;
    box.replaceChildren(...render());
    if (key) {
      const again = [...box.querySelectorAll('[data-focus-key]')].find(n => n.dataset.focusKey === key);
      if (again) again.focus();
    }
  },

  // page renders the destination id's page and returns the function that stops its refreshes.
  async page(view, id) {
    if (!/^[1-9][0-9]{0,18}$/.test(id)) {
      view.append(App.el('p', {}, 'No such destination.'));
      return undefined;
    }
    const base = '/api/destinations/' + id;
    const abort = new AbortController();
    const get = path => App.api('GET', base + path, undefined, { signal: abort.signal });
    let dest = await get('');

    // ---- header, refresh controls ----
    const title = App.el('h1', { id: 'dest-title' });
    const auto = App.el('input', { type: 'checkbox', id: 'auto-refresh', checked: true });
    const refreshButton = App.el('button', { type: 'button', id: 'refresh', class: 'secondary' }, 'Refresh');
    const updated = App.el('span', { id: 'updated', class: 'muted' });
    const showTitle = () => title.replaceChildren(dest.name, ' ', Destinations.statusBadge(dest.status),
      App.el('span', { class: 'title-type' }, Destinations.typeNames[dest.type] || dest.type));

    // ---- settings and state ----
    const settingsBox = App.el('div', { id: 'dest-settings', class: 'facts' });
    const stateBox = App.el('div', { id: 'dest-state', class: 'facts' });
    const manage = Destinations.manage(dest, nd => { dest = nd; showDest(); });

    // ---- delivery chart ----
    const period = App.el('select', { id: 'stats-period' }, Delivery.periods.map(p => App.el('option', { value: String(p.hours) }, p.label)));
    period.value = '24';
    const granularity = App.el('select', { id: 'stats-granularity' },
      ['minute', 'hour', 'day'].map(g => App.el('option', { value: g }, 'per ' + g)));
    granularity.value = 'hour';
    const totalsBox = App.el('div', { id: 'totals', class: 'totals' });
    const chartBox = App.el('div', { id: 'chart' });
    const tableBox = App.el('div', { id: 'stats-table' });

    // ---- issues ----
    const issueType = App.el('select', { id: 'issues-type' },
      App.el('option', { value: '' }, 'all'),
      App.el('option', { value: 'error' }, 'errors (retried)'),
      App.el('option', { value: 'rejected' }, 'rejected'));
    const issuesBox = App.el('div', { id: 'issues' });

    // ---- dead letters ----
    const dlReason = App.el('input', { id: 'dl-reason', type: 'text', list: 'dl-reasons', maxLength: 100, 'aria-describedby': 'dl-reason-hint', spellcheck: 'false' });
    const dlReasons = App.el('datalist', { id: 'dl-reasons' });
    const dlShow = App.el('button', { type: 'button', id: 'dl-show', class: 'secondary' }, 'Show');
    const dlBox = App.el('div', { id: 'dead-letters' });
    const dlPrev = App.el('button', { type: 'button', id: 'dl-first', class: 'secondary', hidden: true }, 'First page');
    const dlNext = App.el('button', { type: 'button', id: 'dl-next', class: 'secondary', hidden: true }, 'Next page');
    const replayAll = App.el('button', { type: 'button', id: 'replay-all' }, 'Replay all');
    const replayReason = App.el('button', { type: 'button', id: 'replay-reason', class: 'secondary', disabled: true }, 'Replay this reason');
    const purge = App.el('button', { type: 'button', id: 'purge', class: 'secondary danger-outline' }, 'Purge…');
    const purgePanel = App.el('div', { id: 'purge-panel', class: 'panel', hidden: true });
    const dlMsg = Destinations.messages('dl');
    const dlCount = App.el('span', { id: 'dl-count', class: 'count' });

    // ---- payloads ----
    const payloadLimit = App.el('select', { id: 'payloads-limit' }, [10, 25, 100].map(n => App.el('option', { value: String(n) }, n + ' newest')));
    const payloadsBox = App.el('div', { id: 'payloads' });

    const section = (key, heading, ...children) => App.el('section', { id: key + '-section', 'aria-labelledby': key + '-title', class: 'dest-section' },
      App.el('h2', { id: key + '-title' }, heading), ...children);

    view.append(
      App.el('p', { class: 'crumbs' }, App.el('a', { href: '#/destinations' }, '← All destinations')),
      title,
      App.el('div', { class: 'row refresh-bar' },
        App.el('div', { class: 'field check' }, auto, App.el('label', { for: 'auto-refresh' }, 'Update every 5 s')),
        refreshButton, updated),
      section('overview', 'Settings and state',
        App.el('div', { class: 'facts-grid' }, settingsBox, stateBox),
        manage.node),
      section('delivery', 'Delivery',
        App.el('div', { class: 'row' },
          App.el('div', {}, App.el('label', { for: 'stats-period' }, 'Period'), period),
          App.el('div', {}, App.el('label', { for: 'stats-granularity' }, 'Bars'), granularity)),
        totalsBox, chartBox, tableBox),
      section('issues', 'Issues',
        App.el('p', { class: 'hint' }, 'Failures grouped by type and reason, most recently seen first. Each keeps its newest request/response samples (credentials redacted).'),
        App.el('div', { class: 'row' }, App.el('div', {}, App.el('label', { for: 'issues-type' }, 'Type'), issueType)),
        issuesBox),
      section('dl', ['Dead letters ', dlCount],
        App.el('p', { class: 'hint' }, 'Events the destination did not take: refused for good, or retries ran out. They stay until replayed, purged, or removed with their event by retention.'),
        App.el('div', { class: 'row' },
          App.el('div', {},
            App.el('label', { for: 'dl-reason' }, 'Kind or reason'),
            dlReason, dlReasons),
          dlShow),
        App.el('p', { class: 'hint', id: 'dl-reason-hint' }, 'rejected or failed, or a reason such as http_400; empty for all. It narrows the list, “Replay this reason” and “Purge”.'),
        dlBox,
        App.el('div', { class: 'row' }, dlPrev, dlNext),
        App.el('div', { class: 'row actions' }, replayAll, replayReason, purge),
        purgePanel, dlMsg.nodes),
      section('payloads', 'Recent outgoing payloads',
        App.el('p', { class: 'hint' }, 'The newest events this destination settled that pass its filters, each as the destination gets it: compare with what came in (the inspector).'),
        App.el('div', { class: 'row' }, App.el('div', {}, App.el('label', { for: 'payloads-limit' }, 'Show'), payloadLimit)),
        payloadsBox),
      Destinations.testPanel(dest));

    // ---- settings and state, drawn from dest ----
    const facts = (rows) => App.el('dl', {}, rows.filter(Boolean).map(([k, v, key]) => [
      App.el('dt', {}, k), App.el('dd', key ? { 'data-state': key } : {}, v)]).flat());
    const showDest = () => {
      showTitle();
      const d = dest;
      const filter = Destinations.filterLines(d.filter);
      settingsBox.replaceChildren(App.el('h3', {}, 'Settings'), facts([
        ['Type', Destinations.typeNames[d.type] || d.type],
        ['Target', App.el('code', { class: 'target' }, Destinations.target(d))],
        (d.type === 'webhook' || d.type === 'forward') && ['Private addresses', d.allow_private ? 'allowed' : 'refused'],
        d.type === 'forward' && ['Source key', d.token_set ? 'set (never shown)' : 'not set'],
        ['Sources', d.sources.length ? d.sources.join(', ') : 'every source'],
        ['Consent category', d.consent_category ? App.el('code', {}, d.consent_category) : 'none (every event)'],
        ['Filter', filter.length ? App.el('ul', { class: 'plain' }, filter.map(l => App.el('li', {}, App.el('code', {}, l)))) : 'none (every event)'],
        ['Batch size', String(d.batch_size)],
        d.type === 'webhook' && ['Signing secrets', App.el('ul', { class: 'plain' }, (d.signing_secrets || []).map((s, i) =>
          App.el('li', {}, App.el('code', {}, s.prefix + '…'), i === 0 ? ' current' : '', s.expires_at ? ' (signs until ' + App.time(s.expires_at) + ')' : '')))],
        ['Created', App.time(d.created_at)],
        ['Updated', App.time(d.updated_at)],
      ]));
      const st = d.state;
      stateBox.replaceChildren(App.el('h3', {}, 'Delivery state'), facts([
        ['Status', d.status === 'paused' ? 'paused: events wait in the event log' : 'active', 'status'],
        ['Settled up to', 'event ' + Destinations.number(st.cursor) + ' of the log', 'cursor'],
        ['Waiting', Destinations.lag(st), 'lag'],
        ['Retries', Destinations.number(st.retries) + (st.next_retry_at ? ', next at ' + App.time(st.next_retry_at) : ''), 'retries'],
        ['Dead letters', Destinations.number(st.dead_letters), 'dead_letters'],
      ]));
      dlCount.textContent = '(' + Destinations.number(st.dead_letters) + ')';
      manage.update(d);
    };

    // ---- the chart ----
    let statsKey = '';
    const loadStats = async () => {
      const hours = Number(period.value);
      const g = granularity.value;
      const end = new Date();
      const start = new Date(end.getTime() - hours * 3600e3);
      const s = await get('/delivery/stats?start=' + encodeURIComponent(start.toISOString()) +
        '&end=' + encodeURIComponent(end.toISOString()) + '&granularity=' + g);
      // Redraw only on a change of the numbers or of the period's buckets.
      const step = Delivery.stepMs[g];
      const first = Math.floor(start.getTime() / step) * step;
      const key = JSON.stringify([hours, g, first, s.total, s.buckets]);
      if (key === statsKey) return;
      statsKey = key;
      Delivery.drawTotals(totalsBox, s.total);
      Delivery.drawChart(chartBox, s, g, first, end.getTime());
      Delivery.drawTable(tableBox, s, g);
    };
    period.addEventListener('change', () => {
      const p = Delivery.periods.find(x => String(x.hours) === period.value);
      if (p) granularity.value = p.granularity;
      App.guard(loadStats);
    });
    granularity.addEventListener('change', () => App.guard(loadStats));

    // ---- issues and their samples ----
    const openIssues = new Set();
    const shownSamples = new Map(); // issue id → the nodes of its samples, kept across redraws
    let issuesKey = '';
    const loadSamples = async (issue, cell) => {
      if (!cell.firstChild) cell.replaceChildren(App.el('p', { class: 'muted' }, 'Loading samples…'));
      const list = await get('/delivery/issues/' + issue.id + '/samples');
      cell.replaceChildren(...(list.items.length ? list.items.map(sm => App.el('div', { class: 'sample', 'data-sample-seq': String(sm.seq) },
        App.el('h4', {}, 'Attempt ' + sm.attempt + ' at ' + App.time(sm.at) + ', event ' + sm.seq + ' of the log'),
        sm.error ? App.el('p', { class: 'bad' }, sm.error) : null,
        Destinations.exchange(sm.request, sm.response, 5))) : [App.el('p', { class: 'muted' }, 'No samples kept.')]));
      shownSamples.set(issue.id, [...cell.childNodes]);
    };
    const loadIssues = async () => {
      const list = await get('/delivery/issues' + (issueType.value ? '?type=' + issueType.value : ''));
      const key = JSON.stringify(list.items);
      if (key === issuesKey) return;
      issuesKey = key;
      if (!list.items.length) {
        issuesBox.replaceChildren(App.el('p', { class: 'muted' }, 'No issues: every attempt succeeded.'));
        return;
      }
      const body = App.el('tbody', {});
      const pending = [];
      for (const is of list.items) {
        const sid = 'samples-' + is.id;
        const open = openIssues.has(is.id);
        const button = App.el('button', {
          type: 'button', class: 'secondary small', 'data-samples': String(is.id), 'data-focus-key': 'issue-' + is.id,
          'aria-expanded': String(open), 'aria-controls': sid,
        });
        // The visible label is the same on every row; the hidden part tells them apart.
        const label = nowOpen => button.replaceChildren(nowOpen ? 'Hide samples' : 'Show samples',
          App.el('span', { class: 'visually-hidden' }, ' of ' + is.type + ' ' + is.reason));
        label(open);
        const cell = App.el('td', { colspan: '7' }, shownSamples.get(is.id) || []);
        const sampleRow = App.el('tr', { id: sid, class: 'samples', hidden: !open }, cell);
        button.addEventListener('click', () => {
          const nowOpen = sampleRow.hidden;
          sampleRow.hidden = !nowOpen;
          button.setAttribute('aria-expanded', String(nowOpen));
          label(nowOpen);
          if (nowOpen) { openIssues.add(is.id); App.guard(() => loadSamples(is, cell)); } else openIssues.delete(is.id);
        });
        if (open) pending.push(() => loadSamples(is, cell));
        body.append(
          App.el('tr', { 'data-issue-id': String(is.id), 'data-issue-type': is.type, 'data-issue-reason': is.reason },
            App.el('td', {}, App.el('span', { class: 'badge issue-' + is.type }, is.type)),
            App.el('td', {}, App.el('code', {}, is.reason)),
            App.el('td', { class: 'num' }, Destinations.number(is.count)),
            App.el('td', {}, is.event_names.join(', ')),
            App.el('td', {}, App.time(is.first_seen)),
            App.el('td', {}, App.time(is.last_seen)),
            App.el('td', {}, button)),
          sampleRow);
      }
      Delivery.redraw(issuesBox, () => [App.el('table', { class: 'issues' },
        App.el('thead', {}, App.el('tr', {}, ['Type', 'Reason', 'Count', 'Event names', 'First seen', 'Last seen', 'Samples'].map(h => App.el('th', { scope: 'col' }, h)))),
        body)]);
      await Promise.all(pending.map(f => f()));
    };
    issueType.addEventListener('change', () => App.guard(loadIssues));

    // ---- dead letters ----
    let dlAfter = null; // the cursor of the page shown (null: the first)
    let dlNextCursor = null;
    let dlKey = '';
    let dlFilter = '';
    const reasonsSeen = new Set(['rejected', 'failed']);
    const loadDeadLetters = async () => {
      let q = '?limit=' + Delivery.deadLetterPage;
      if (dlFilter) q += '&reason=' + encodeURIComponent(dlFilter);
      if (dlAfter) q += '&after=' + encodeURIComponent(dlAfter);
      const page = await get('/dead-letters' + q);
      const key = JSON.stringify([dlFilter, dlAfter, page]);
      if (key === dlKey) return;
      dlKey = key;
      dlNextCursor = page.next || null;
      dlNext.hidden = !dlNextCursor;
      dlPrev.hidden = !dlAfter;
      for (const d of page.items) reasonsSeen.add(d.reason);
      dlReasons.replaceChildren(...[...reasonsSeen].sort().map(r => App.el('option', { value: r })));
      dlBox.replaceChildren(App.table([
        ['Event', d => App.el('span', {}, d.event_name, App.el('span', { class: 'muted' }, ' #' + d.seq))],
        ['Kind', d => App.el('span', { class: 'badge issue-' + (d.kind === 'rejected' ? 'rejected' : 'error') }, d.kind)],
        ['Reason', d => App.el('code', {}, d.reason)],
        ['Error', d => App.el('span', { class: 'error-text' }, d.error)],
        ['Attempts', d => String(d.attempts)],
        ['First failed', d => App.time(d.first_failed_at)],
        ['Last failed', d => App.time(d.failed_at)],
      ], page.items, dlFilter ? 'No dead letters of ' + dlFilter + '.' : 'No dead letters.'));
    };
    const applyFilter = () => {
      dlFilter = dlReason.value.trim();
      dlAfter = null;
      replayReason.disabled = !dlFilter;
      purgePanel.hidden = true;
      return App.guard(loadDeadLetters);
    };
    dlShow.addEventListener('click', applyFilter);
    dlReason.addEventListener('keydown', e => { if (e.key === 'Enter') { e.preventDefault(); applyFilter(); } });
    dlReason.addEventListener('input', () => { replayReason.disabled = !dlReason.value.trim(); });
    dlNext.addEventListener('click', () => { dlAfter = dlNextCursor; App.guard(loadDeadLetters).then(() => dlBox.focus()); });
    dlPrev.addEventListener('click', () => { dlAfter = null; App.guard(loadDeadLetters); });
    dlBox.setAttribute('tabindex', '-1');

    const afterChange = async () => {
      dlAfter = null;
      await Promise.all([loadDeadLetters(), loadDest()]);
    };
    const replay = async (reason) => {
      const body = reason ? { reason } : {};
      const out = await dlMsg.run([replayAll, replayReason], () => App.api('POST', base + '/dead-letters/replay', body), 'Queuing…');
      if (!out) return;
      dlMsg.say(out.count === 1 ? 'Replay: 1 dead letter queued for delivery.' : 'Replay: ' + out.count + ' dead letters queued for delivery.');
      await App.guard(afterChange);
    };
    replayAll.addEventListener('click', () => replay(''));
    replayReason.addEventListener('click', () => {
      const r = dlReason.value.trim();
      if (r) replay(r);
    });
    purge.addEventListener('click', () => {
      const r = dlReason.value.trim();
      const yes = App.el('button', { type: 'button', id: 'purge-confirm', class: 'danger' }, r ? 'Purge those of ' + r : 'Purge all');
      const no = App.el('button', { type: 'button', class: 'secondary', onclick: () => { purgePanel.hidden = true; purge.focus(); } }, 'Cancel');
      yes.addEventListener('click', async () => {
        const out = await dlMsg.run([yes], () => App.api('DELETE', base + '/dead-letters' + (r ? '?reason=' + encodeURIComponent(r) : '')));
        if (!out) return;
        purgePanel.hidden = true;
        dlMsg.say('Purged ' + out.count + (out.count === 1 ? ' dead letter.' : ' dead letters.'));
        purge.focus();
        await App.guard(afterChange);
      });
      purgePanel.replaceChildren(
        App.el('p', {}, r ? 'Delete the dead letters of ' + r + ' without sending them?' : 'Delete every dead letter of ' + dest.name + ' without sending it?'),
        App.el('div', { class: 'row' }, yes, no));
      purgePanel.hidden = false;
      no.focus();
    });

    // ---- payloads ----
    const openPayloads = new Set();
    let payloadsKey = '';
    const loadPayloads = async () => {
      const list = await get('/payloads?limit=' + payloadLimit.value);
      const key = JSON.stringify(list.items);
      if (key === payloadsKey) return;
      payloadsKey = key;
      Delivery.redraw(payloadsBox, () => [App.table([
        ['Event', p => App.el('span', {}, p.event_name, App.el('span', { class: 'muted' }, ' #' + p.seq))],
        ['Received', p => App.time(p.received_at)],
        ['Payload', p => {
          const det = App.el('details', { 'data-payload-seq': String(p.seq) },
            App.el('summary', { 'data-focus-key': 'payload-' + p.seq }, 'Show the payload',
              App.el('span', { class: 'visually-hidden' }, ' of ' + p.event_name + ' #' + p.seq)),
            App.el('pre', { tabindex: '0' }, App.json(p.payload)));
          det.open = openPayloads.has(p.seq);
          det.addEventListener('toggle', () => { if (det.open) openPayloads.add(p.seq); else openPayloads.delete(p.seq); });
          return det;
        }],
      ], list.items, 'Nothing sent yet.')]);
    };
    payloadLimit.addEventListener('change', () => App.guard(loadPayloads));

    // ---- refreshing ----
    let destKey = '';
    const loadDest = async () => {
      const d = await get('');
      const key = JSON.stringify(d);
      if (key === destKey) return;
      destKey = key;
      dest = d;
      showDest();
    };
    const loadAll = () => Promise.all([
      loadDest(), loadStats(), loadIssues(), loadPayloads(),
      dlAfter === null ? loadDeadLetters() : null, // a later page stays as it is until asked
    ]).then(() => { updated.textContent = 'Updated ' + new Date().toLocaleTimeString(); });
    // refresh runs loadAll, one at a time; asked while one runs, it runs once more after it.
    let running = null;
    let again = false;
    const refresh = () => {
      if (running) { again = true; return running; }
      running = (async () => {
        try {
          do { again = false; await loadAll(); } while (again);
        } finally { running = null; }
      })();
      return running;
    };
    refreshButton.addEventListener('click', () => App.guard(refresh));
    const timer = setInterval(() => {
      if (!auto.checked || document.hidden) return;
      refresh().catch(err => { if (err.name !== 'AbortError') App.showError(err); });
    }, Delivery.refreshMs);

    const stop = () => { clearInterval(timer); abort.abort(); };
    destKey = JSON.stringify(dest);
    showDest();
    try { await refresh(); } catch (err) { if (err.name !== 'AbortError') App.showError(err); }
    // Left while it loaded: another screen is shown, so nothing is to be refreshed.
    if (!title.isConnected) { stop(); return undefined; }
    return stop;
  },

  drawTotals(box, t) {
    const card = (key, label, value, detail) => App.el('div', { class: 'total total-' + key },
      App.el('span', { class: 'total-label' }, label),
      App.el('span', { class: 'total-value', 'data-total': key }, value === null ? '—' : Destinations.number(value)),
      App.el('span', { class: 'total-detail' }, detail));
    box.replaceChildren(
      App.el('h3', { class: 'visually-hidden' }, 'Totals over the period'),
      card('delivered', 'Delivered', t.delivered + t.delivered_after_retry, Destinations.number(t.delivered_after_retry) + ' after retries'),
      card('filtered', 'Filtered', t.filtered_consent + t.filtered_condition,
        Destinations.number(t.filtered_consent) + ' by consent, ' + Destinations.number(t.filtered_condition) + ' by condition'),
      card('failed', 'Failed', t.rejected + t.failed + t.expired,
        Destinations.number(t.rejected) + ' rejected, ' + Destinations.number(t.failed) + ' out of retries, ' + Destinations.number(t.expired) + ' expired'),
      card('retried', 'Retried attempts', t.retried, 'failed attempts that were tried again'),
      card('latency', 'Average latency', t.latency_avg_ms === undefined ? null : t.latency_avg_ms,
        t.latency_avg_ms === undefined ? 'nothing delivered' : 'ms from receipt to delivery'));
  },

  // drawChart draws the period's buckets (empty ones included) as stacked bars in an SVG.
  drawChart(box, s, g, first, endMs) {
    const step = Delivery.stepMs[g];
    const n = Math.max(1, Math.ceil((endMs - first) / step));
    const legend = App.el('ul', { class: 'legend', 'aria-label': 'Legend' }, Delivery.groups.map(gr =>
      App.el('li', {}, App.el('span', { class: 'swatch ' + gr.key, 'aria-hidden': 'true' }), gr.label + ' ', App.el('span', { class: 'muted' }, '(' + gr.detail + ')'))));
    if (!s.buckets.length) {
      box.replaceChildren(App.el('p', { class: 'muted chart-empty' }, 'Nothing happened in this period.'), legend);
      return;
    }
    if (n > Delivery.maxBars) {
      box.replaceChildren(App.el('p', { class: 'muted chart-empty' }, n + ' bars are too many to draw: choose larger bars or a shorter period. The table below has the numbers.'), legend);
      return;
    }
    const sums = s.buckets.map(b => ({ at: Date.parse(b.start), parts: Delivery.groups.map(gr => gr.sum(b.counts)) }));
    const top = Delivery.niceMax(Math.max(1, ...sums.map(x => x.parts.reduce((a, v) => a + v, 0))));
    const NS = 'http://www.w3.org/2000/svg';
    const svgEl = (tag, attrs, ...children) => {
      const node = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
      for (const c of children) node.append(c);
      return node;
    };
    const W = 10; // viewBox units per bar; the SVG stretches to the width of the page
    const H = 100;
    const totals = Delivery.groups.map(gr => gr.sum(s.total));
    const svg = svgEl('svg', {
      class: 'delivery-chart', viewBox: '0 0 ' + (n * W) + ' ' + H, preserveAspectRatio: 'none', role: 'img',
      'aria-label': 'Delivery chart, one bar per ' + g + ': ' + Delivery.groups.map((gr, i) => totals[i] + ' ' + gr.label.toLowerCase()).join(', ') +
        ' in total. The table below the chart has the numbers.',
    });
    svg.append(svgEl('line', { class: 'grid', x1: 0, x2: n * W, y1: H / 2, y2: H / 2 }));
    for (const b of sums) {
      const i = Math.round((b.at - first) / step);
      if (i < 0 || i >= n) continue;
      let y = H;
      const group = svgEl('g', { class: 'bar' }, svgEl('title', {},
        Delivery.when(b.at, g) + ': ' + Delivery.groups.map((gr, k) => b.parts[k] + ' ' + gr.label.toLowerCase()).join(', ')));
      Delivery.groups.forEach((gr, k) => {
        const h = b.parts[k] / top * H;
        if (h <= 0) return;
        y -= h;
        group.append(svgEl('rect', { class: gr.key, x: i * W + W * 0.1, width: W * 0.8, y, height: h }));
      });
      svg.append(group);
    }
    const axisY = App.el('div', { class: 'chart-y', 'aria-hidden': 'true' },
      App.el('span', {}, Destinations.number(top)), App.el('span', {}, Destinations.number(top / 2)), App.el('span', {}, '0'));
    const axisX = App.el('div', { class: 'chart-x', 'aria-hidden': 'true' },
      App.el('span', {}, Delivery.when(first, g)),
      App.el('span', {}, Delivery.when(first + Math.floor(n / 2) * step, g)),
      App.el('span', {}, Delivery.when(first + (n - 1) * step, g)));
    box.replaceChildren(App.el('figure', { class: 'chart-figure' },
      App.el('div', { class: 'chart-plot' }, axisY, svg), axisX, legend));
  },

  // drawTable shows the chart's numbers, bucket by bucket (the buckets with events).
  drawTable(box, s, g) {
    const count = s.buckets.length;
    const summary = App.el('summary', {}, 'The chart as a table (' + count + (count === 1 ? ' bar' : ' bars') + ')');
    const table = App.table([
      [g === 'day' ? 'Day' : 'From', b => Delivery.when(b.start, g)],
      ['Delivered', b => Destinations.number(Delivery.groups[0].sum(b.counts))],
      ['of which after retries', b => Destinations.number(b.counts.delivered_after_retry)],
      ['Filtered', b => Destinations.number(Delivery.groups[1].sum(b.counts))],
      ['Failed', b => Destinations.number(Delivery.groups[2].sum(b.counts))],
      ['Retried attempts', b => Destinations.number(b.counts.retried)],
      ['Average latency', b => b.counts.latency_avg_ms === undefined ? '—' : Destinations.number(b.counts.latency_avg_ms) + ' ms'],
    ], s.buckets, 'No events in this period.');
    const old = box.querySelector('details');
    const det = App.el('details', { class: 'chart-table' }, summary, table);
    det.open = !!(old && old.open);
    box.replaceChildren(det);
  },
};
