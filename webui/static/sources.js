'use strict';
// The sources screen (#/sources, or #/sources/ID with that source's keys open): every source with
// its keys; create a source, rotate a key with an overlap, revoke a key, deactivate or reactivate a
// source. A key is shown once, right after it is made (the API never returns it again), in a notice
// with a Copy button and a curl command to paste. See app.js for App.
(() => {
  // The collect API's address is not known to the admin listener (it may sit behind a proxy or a
  // load balancer with a public name), so the command carries a placeholder, labelled as such.
  const COLLECTOR = 'http://COLLECTOR:8080';
  const MAX_OVERLAP_SECONDS = 7 * 24 * 3600; // admin.yaml: expire_previous_after_seconds ≤ 604800
  const KEY_READS_AT_ONCE = 6;

  // The sources whose keys are open, kept while the tab lives.
  const open = new Set();

  // listAll reads every page of a list.
  async function listAll(path) {
    const items = [];
    let after = '';
    for (;;) {
      const page = await App.api('GET', path + '?limit=1000' + (after ? '&after=' + encodeURIComponent(after) : ''));
      items.push(...page.items);
      if (!page.next) return items;
      after = page.next;
    }
  }

  // keysOf reads the keys of every source, a few requests at a time.
  async function keysOf(sources) {
    const keys = new Map();
    let next = 0;
    async function worker() {
      while (next < sources.length) {
        const s = sources[next++];
        const list = await App.api('GET', '/api/sources/' + s.id + '/keys');
        keys.set(s.id, list.items);
      }
    }
    await Promise.all(Array.from({ length: Math.min(KEY_READS_AT_ONCE, sources.length) }, worker));
    return keys;
  }

  // shellQuote quotes s for a POSIX shell.
  function shellQuote(s) { return "'" + s.replace(/'/g, "'\\''") + "'"; }

  // curlCommand sends one page view with the key, marked with a test_code so that the inspector
  // keeps it whatever its sampling and the test_code filter finds it.
  function curlCommand(site, key) {
    const url = COLLECTOR + '/events?tc_s=' + encodeURIComponent(site) + '&token=' + encodeURIComponent(key);
    const event = { event_name: 'page_view', page_type: 'home', test_code: 'ui-check',
      user: { consistent_anonymous_id: 'visitor-1', consent_categories: ['1'] } };
    return 'curl -sS -X POST ' + shellQuote(url) + ' \\\n' +
      "  -H 'Content-Type: application/json' \\\n" +
      '  -d ' + shellQuote(JSON.stringify(event));
  }

  // copy puts the text of node on the clipboard; where the page may not (an http:// address other
  // than localhost has no navigator.clipboard), it selects the text for Ctrl+C instead.
  async function copy(node, status) {
    try {
      if (!navigator.clipboard) throw new Error('no clipboard');
      await navigator.clipboard.writeText(node.textContent);
      status.textContent = 'Copied.';
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents(node);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      status.textContent = 'Selected: press Ctrl+C (⌘C on a Mac) to copy.';
    }
  }

  // keyNotice shows a new key once: the key, a Copy button, and a curl command that uses it.
  function keyNotice(box, title, source, key, extra) {
    const el = App.el;
    const status = el('p', { class: 'copy-status', role: 'status' });
    const keyNode = el('code', { id: 'new-key', class: 'secret', 'data-source-id': String(source.id), 'data-key-id': String(key.id) }, key.key);
    const curlNode = el('pre', { id: 'new-curl', class: 'command' }, curlCommand(source.site, key.key));
    const notice = el('section', { id: 'key-notice', class: 'notice key-notice', tabindex: '-1', 'aria-labelledby': 'key-notice-title' },
      el('h2', { id: 'key-notice-title' }, title),
      el('p', {}, 'Copy the key now: it is shown only this once and cannot be read again (rotate the key if it is lost).'),
      extra,
      el('div', { class: 'copy-row' },
        keyNode,
        el('button', { type: 'button', id: 'copy-key', onclick: () => copy(keyNode, status) }, 'Copy key')),
      el('h3', {}, 'Send a test page view'),
      el('p', {}, 'Replace ', el('code', {}, COLLECTOR), ' with the address of your collect API: ',
        'it is a placeholder, as the admin listener does not know the address senders reach. ',
        'The event carries ', el('code', {}, 'test_code: "ui-check"'), ', so the inspector keeps it.'),
      curlNode,
      el('div', { class: 'copy-row' },
        el('button', { type: 'button', class: 'secondary', id: 'copy-curl', onclick: () => copy(curlNode, status) }, 'Copy command'),
        el('a', { href: '#/inspector/' + source.id }, 'Watch it arrive in the inspector')),
      status,
      el('button', { type: 'button', class: 'secondary', id: 'dismiss-key', onclick: () => box.replaceChildren() }, 'Done: hide the key'));
    box.replaceChildren(notice);
    notice.focus();
  }

  // confirmable is a button that asks before it acts: the first press shows the question with a
  // confirm and a cancel button in its place (no window.confirm, which blocks and is easy to miss).
  function confirmable(label, question, confirmLabel, attrs, action) {
    const el = App.el;
    const wrap = el('span', { class: 'confirmable' });
    const first = el('button', Object.assign({ type: 'button', class: 'secondary' }, attrs), label);
    const reset = () => { wrap.replaceChildren(first); first.focus(); };
    first.addEventListener('click', () => {
      const yes = el('button', { type: 'button', class: 'danger', 'data-confirm': attrs['data-action'] },
        confirmLabel);
      yes.addEventListener('click', () => App.guard(action));
      wrap.replaceChildren(el('span', { class: 'question' }, question), ' ', yes, ' ',
        el('button', { type: 'button', class: 'secondary', onclick: reset }, 'Cancel'));
      yes.focus();
    });
    wrap.append(first);
    return wrap;
  }

  function keyState(k) {
    if (k.live) return App.el('span', { class: 'ok' }, 'live');
    if (k.revoked_at) return App.el('span', { class: 'muted' }, 'revoked ' + App.time(k.revoked_at));
    return App.el('span', { class: 'muted' }, 'expired');
  }

  // keysPanel lists a source's keys, with the rotate form and a revoke button per live key.
  function keysPanel(source, keys, notice, reload) {
    const el = App.el;
    const table = el('table', { class: 'keys', 'aria-label': 'Keys of source ' + source.id },
      el('thead', {}, el('tr', {}, ['Prefix', 'Created', 'Expires', 'Last used', 'State', ''].map(h =>
        el('th', { scope: 'col' }, h)))),
      el('tbody', {}, keys.map(k => el('tr', { 'data-key-id': String(k.id), 'data-prefix': k.prefix, 'data-live': String(k.live) },
        el('td', {}, el('code', {}, k.prefix)),
        el('td', {}, App.time(k.created_at)),
        el('td', {}, k.expires_at ? App.time(k.expires_at) : 'never'),
        el('td', {}, k.last_used_at ? App.time(k.last_used_at) : 'never'),
        el('td', {}, keyState(k)),
        el('td', {}, k.live ? confirmable('Revoke', 'Revoke ' + k.prefix + ' now? Its events will be rejected.',
          'Revoke key', { 'data-action': 'revoke', 'aria-label': 'Revoke key ' + k.prefix }, async () => {
            await App.api('DELETE', '/api/sources/' + source.id + '/keys/' + k.id);
            await reload();
          }) : '')))));

    const id = 'overlap-' + source.id, unitId = 'overlap-unit-' + source.id;
    const amount = el('input', { id, type: 'number', min: '0', max: '168', step: '1', value: '24', required: true, class: 'narrow' });
    const unit = el('select', { id: unitId, 'aria-label': 'Unit of the overlap' },
      el('option', { value: '3600', selected: true }, 'hours'),
      el('option', { value: '1' }, 'seconds'));
    unit.addEventListener('change', () => { amount.max = String(MAX_OVERLAP_SECONDS / Number(unit.value)); });
    const form = el('form', { class: 'rotate', 'data-source-id': String(source.id) },
      el('div', { class: 'row' },
        el('div', {}, el('label', { for: id }, 'The other keys keep working for'), el('div', { class: 'inline' }, amount, unit)),
        el('button', { type: 'submit', 'data-action': 'rotate' }, 'Rotate key')),
      el('p', { class: 'muted hint' }, 'Makes a new key (shown once) and makes the live keys expire after the overlap, 0 to 7 days, so senders can switch over. A source has at most 5 live keys.'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      App.guard(async () => {
        const n = Number(amount.value), seconds = n * Number(unit.value);
        if (!Number.isInteger(n) || n < 0 || seconds > MAX_OVERLAP_SECONDS) {
          throw new Error('The overlap must be a whole number from 0 to 7 days (168 hours, 604800 seconds).');
        }
        const key = await App.api('POST', '/api/sources/' + source.id + '/keys', { expire_previous_after_seconds: seconds });
        keyNotice(notice, 'New key for source ' + source.id + ', shown only this once', source, key,
          App.el('p', {}, key.previous_expire_at
            ? ['The previous keys stop working at ', el('strong', {}, App.time(key.previous_expire_at)), '.']
            : 'There was no other live key.'));
        await reload();
      });
    });
    return el('div', { class: 'keys-panel' }, table, form);
  }

  function sourcesTable(sources, keys, notice, reload) {
    const el = App.el;
    const rows = [];
    for (const s of sources) {
      const sourceKeys = keys.get(s.id) || [];
      const panelId = 'keys-' + s.id;
      const isOpen = open.has(s.id);
      const toggle = el('button', { type: 'button', class: 'secondary', 'data-action': 'keys',
        'aria-expanded': String(isOpen), 'aria-controls': panelId }, isOpen ? 'Hide keys' : 'Keys');
      toggle.addEventListener('click', () => {
        if (open.has(s.id)) open.delete(s.id); else open.add(s.id);
        const now = open.has(s.id);
        toggle.setAttribute('aria-expanded', String(now));
        toggle.textContent = now ? 'Hide keys' : 'Keys';
        document.getElementById(panelId).hidden = !now;
      });
      const activeButton = s.active
        ? confirmable('Deactivate', 'Deactivate? Its keys stop working within 2 s.', 'Deactivate source',
          { 'data-action': 'deactivate', 'aria-label': 'Deactivate source ' + s.id }, async () => {
            await App.api('PATCH', '/api/sources/' + s.id, { active: false });
            await reload();
          })
        : el('button', { type: 'button', class: 'secondary', 'data-action': 'reactivate', 'aria-label': 'Reactivate source ' + s.id,
          onclick: () => App.guard(async () => {
            await App.api('PATCH', '/api/sources/' + s.id, { active: true });
            await reload();
          }) }, 'Reactivate');
      const live = sourceKeys.filter(k => k.live);
      rows.push(el('tr', { 'data-source-id': String(s.id), class: s.active ? '' : 'inactive' },
        el('td', {}, String(s.id)),
        el('td', {}, el('code', {}, s.site)),
        el('td', {}, s.name || el('span', { class: 'muted' }, '—')),
        el('td', { class: 'state' }, s.active ? el('span', { class: 'ok' }, 'active') : el('span', { class: 'bad' }, 'inactive')),
        el('td', { class: 'num' }, String(s.live_keys)),
        el('td', { class: 'prefixes' }, live.length ? live.map(k => el('code', { 'data-prefix': k.prefix }, k.prefix)) : el('span', { class: 'muted' }, 'none')),
        el('td', { class: 'actions' }, toggle, activeButton,
          el('a', { href: '#/inspector/' + s.id, 'aria-label': 'Inspector of source ' + s.id }, 'Inspector'),
          el('a', { href: '#/quality/' + s.id, 'aria-label': 'Data quality of source ' + s.id }, 'Quality'))));
      rows.push(el('tr', { id: panelId, class: 'keys-row', 'data-keys-of': String(s.id), hidden: !isOpen },
        el('td', { colspan: '7' }, keysPanel(s, sourceKeys, notice, reload))));
    }
    return el('table', { id: 'sources-table' },
      el('thead', {}, el('tr', {}, ['ID', 'Site', 'Name', 'State', 'Live keys', 'Live key prefixes', 'Actions'].map(h =>
        el('th', { scope: 'col', class: h === 'Live keys' ? 'num' : '' }, h)))),
      el('tbody', {}, rows));
  }

  App.route('sources', async (view, params) => {
    const el = App.el;
    if (params[0] && /^\d+$/.test(params[0])) open.add(Number(params[0]));
    const notice = el('div', { id: 'key-notice-box' });
    const list = el('div', { id: 'sources-list', 'aria-live': 'polite', 'aria-busy': 'true' });

    // reload reads the sources and their keys again and replaces the table (aria-busy while).
    async function reload() {
      list.setAttribute('aria-busy', 'true');
      try {
        const sources = await listAll('/api/sources');
        const keys = await keysOf(sources);
        list.replaceChildren(sources.length ? sourcesTable(sources, keys, notice, reload)
          : el('p', { class: 'muted' }, 'No source yet: create one below.'));
      } finally {
        list.setAttribute('aria-busy', 'false');
      }
    }

    const form = el('form', { id: 'source-form', class: 'create' },
      el('div', { class: 'row' },
        el('div', {}, ...App.field('source-site', 'Site (tc_s)', { required: true, pattern: '[A-Za-z0-9_.\\-]+', maxLength: 200,
          autocomplete: 'off', 'aria-describedby': 'source-site-hint' })),
        el('div', {}, ...App.field('source-name', 'Name', { maxLength: 200, autocomplete: 'off' })),
        el('button', { type: 'submit' }, 'Create source')),
      el('p', { id: 'source-site-hint', class: 'muted hint' }, 'The site id senders put in tc_s: letters, digits, _ . and -.'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      App.guard(async () => {
        const site = form.querySelector('#source-site').value.trim();
        const name = form.querySelector('#source-name').value.trim();
        const created = await App.api('POST', '/api/sources', name ? { site, name } : { site });
        form.reset();
        open.add(created.source.id);
        keyNotice(notice, 'Source ' + created.source.id + ' created: its key, shown only this once', created.source, created.key);
        await reload();
      });
    });

    view.append(el('h1', {}, 'Sources'), notice, list, el('h2', {}, 'New source'), form);
    await reload();
  });
})();
