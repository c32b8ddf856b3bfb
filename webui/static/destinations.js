'use strict';
// The destinations screens: the list with the create form (its condition filter builder
// included), and what can be done to one destination from its page: edit, pause or resume,
// delete, rotate the signing secret, test or dry run. The page itself (#/destinations/3: settings,
// state, delivery chart, issues, dead letters, payloads) is delivery.js's; the route is this
// file's. Everything the API returns is put into the page as text (App.el), never as markup.

const Destinations = {
  typeNames: { webhook: 'Webhook', forward: 'Forward (another collector)', kafka: 'Kafka', file: 'Files (NDJSON)' },

  // The condition operators (admin.yaml's Condition.op) with their labels; the last three take no
  // value.
  ops: [
    ['is', 'is'], ['is_not', 'is not'], ['contains', 'contains'], ['not_contains', 'does not contain'],
    ['starts_with', 'starts with'], ['ends_with', 'ends with'], ['matches', 'matches (RE2)'],
    ['not_matches', 'does not match (RE2)'], ['exists', 'exists'], ['not_exists', 'does not exist'],
    ['is_empty', 'is empty'],
  ],
  valueless: ['exists', 'not_exists', 'is_empty'],
  maxConditions: 20, // admin.yaml's DestinationFilter.conditions.maxItems

  // flash is a message for the next rendering of the list (after a delete).
  flash: null,

  // ---- small helpers shared with delivery.js ----

  // words splits a comma-separated input into its trimmed, non-empty parts.
  words(text) { return text.split(',').map(s => s.trim()).filter(Boolean); },

  duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 120) return s + ' s';
    if (s < 7200) return Math.round(s / 60) + ' min';
    if (s < 172800) return Math.floor(s / 3600) + ' h ' + Math.round((s % 3600) / 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.round((s % 86400) / 3600) + ' h';
  },

  number(n) { return (n || 0).toLocaleString(); },

  // target is where a destination sends to, as text.
  target(d) {
    switch (d.type) {
      case 'webhook': return d.url || '';
      case 'forward': return (d.url || '') + (d.site ? ' (site ' + d.site + ')' : '');
      case 'kafka': return (d.brokers || []).join(', ') + (d.topic ? ' → ' + d.topic : '');
      case 'file': return d.path || '';
      default: return '';
    }
  },

  lag(state) {
    if (!state || !state.lag_events) return 'none';
    let s = Destinations.number(state.lag_events) + ' events';
    if (state.lag_seconds !== undefined && state.lag_seconds !== null) s += ', oldest ' + Destinations.duration(state.lag_seconds);
    return s;
  },

  statusBadge(status) {
    return App.el('span', { class: 'badge status-' + status }, status === 'paused' ? 'paused' : 'active');
  },

  // filterText describes a filter in words, one line per part.
  filterLines(f) {
    if (!f) return [];
    const lines = [];
    if (f.event_names && f.event_names.length) lines.push('event name is one of: ' + f.event_names.join(', '));
    if (f.exclude_event_names && f.exclude_event_names.length) lines.push('event name is not: ' + f.exclude_event_names.join(', '));
    for (const c of f.conditions || []) {
      const op = (Destinations.ops.find(([v]) => v === c.op) || [c.op, c.op])[1];
      lines.push(c.path + ' ' + op + (Destinations.valueless.includes(c.op) ? '' : ' ' + JSON.stringify(c.value)));
    }
    return lines;
  },

  // status is a line that says what an action did (role=status) and one for its error
  // (role=alert), next to the controls, so that the message is where the person looks.
  messages(prefix) {
    const ok = App.el('p', { id: prefix + '-status', class: 'action-status', role: 'status' });
    const bad = App.el('p', { id: prefix + '-error', class: 'action-error', role: 'alert', hidden: true });
    return {
      nodes: [ok, bad],
      clear() { ok.textContent = ''; bad.hidden = true; bad.textContent = ''; },
      say(text) { bad.hidden = true; ok.textContent = text; },
      fail(err) { ok.textContent = ''; bad.textContent = (err && err.message) ? err.message : String(err); bad.hidden = false; },
      // run runs an async action with its error shown here; buttons are disabled meanwhile, and
      // busy (if given) says what is going on.
      async run(buttons, action, busy) {
        this.clear();
        if (busy) ok.textContent = busy;
        const was = buttons.map(b => b.disabled);
        for (const b of buttons) b.disabled = true;
        try { return await action(); } catch (err) {
          if (err.name !== 'AbortError') this.fail(err);
          return undefined;
        } finally {
          buttons.forEach((b, i) => { b.disabled = was[i]; });
        }
      },
    };
  },

  // copyButton copies the value of input, saying so in a live region.
  copyButton(id, input) {
    const said = App.el('span', { class: 'copy-status', 'aria-live': 'polite' });
    const button = App.el('button', {
      type: 'button', id, class: 'secondary',
      onclick: async () => {
        let done = false;
        try {
          if (navigator.clipboard && window.isSecureContext) {
            await navigator.clipboard.writeText(input.value);
            done = true;
          }
        } catch (e) { done = false; }
        if (!done) {
          input.focus();
          input.select();
          try { done = document.execCommand('copy'); } catch (e) { done = false; }
        }
        said.textContent = done ? 'Copied.' : 'Could not copy: the secret is selected, press Ctrl+C.';
      },
    }, 'Copy');
    return [button, said];
  },

  // secretNotice shows a signing secret that the API returns only once.
  secretNotice(title, secret, extra) {
    const input = App.el('input', { id: 'new-secret', type: 'text', readOnly: true, value: secret, class: 'secret', spellcheck: 'false' });
    const heading = App.el('h3', { id: 'secret-heading', tabindex: '-1' }, title);
    const box = App.el('div', { class: 'notice secret-notice', id: 'secret-notice', 'aria-labelledby': 'secret-heading', role: 'region' },
      heading,
      App.el('p', {}, 'Copy it now: it is shown only this once. Receivers verify requests with it (Standard Webhooks).'),
      App.el('label', { for: 'new-secret' }, 'Signing secret'),
      App.el('div', { class: 'row' }, input, Destinations.copyButton('copy-secret', input)),
      extra);
    return { box, focus() { heading.focus(); } };
  },

  // ---- the exchange of a test or an issue sample ----

  // body shows a request's or response's body, pretty-printed when it is JSON.
  body(text, label) {
    if (text === undefined || text === null || text === '') return App.el('p', { class: 'muted' }, 'No body.');
    let shown = text;
    try { shown = App.json(JSON.parse(text)); } catch (e) { shown = text; }
    return App.el('pre', { class: 'body', tabindex: '0', 'aria-label': label }, shown);
  },

  headers(headers) {
    const rows = Object.entries(headers || {}).sort(([a], [b]) => a.localeCompare(b));
    return App.table([['Header', ([k]) => k], ['Value', ([, v]) => App.el('code', {}, v)]], rows, 'No headers.');
  },

  // exchange shows a request and, when there was one, the answer; level is the heading level of
  // its two parts.
  exchange(request, response, level) {
    const h = 'h' + (level || 3);
    const parts = [];
    if (request) {
      parts.push(App.el('div', { class: 'exchange-part request' },
        App.el(h, {}, 'Request'),
        App.el('p', { class: 'request-line' }, App.el('code', {}, request.method + ' ' + request.url)),
        Destinations.headers(request.headers),
        Destinations.body(request.body, 'Request body')));
    }
    if (response) {
      const cls = response.status >= 200 && response.status < 300 ? 'ok' : 'bad';
      parts.push(App.el('div', { class: 'exchange-part response' },
        App.el(h, {}, 'Response'),
        App.el('p', { class: 'response-status' }, 'Status ', App.el('strong', { class: cls }, String(response.status))),
        Destinations.headers(response.headers),
        Destinations.body(response.body, 'Response body')));
    }
    return App.el('div', { class: 'exchange' }, parts);
  },

  // ---- the form ----

  // form builds the create form (dest null) or the edit form of dest. prefix makes the element
  // ids (new-name, edit-name, ...). read() gives the request body of a create; changes() the
  // fields an edit changed.
  form(prefix, dest) {
    const editing = !!dest;
    const id = s => prefix + '-' + s;
    const hintOf = (key, hint) => hint ? App.el('p', { class: 'hint', id: id(key) + '-hint' }, hint) : null;

    // field is a labelled input with an optional hint that describes it.
    const field = (key, label, attrs, hint) => {
      const input = App.el('input', Object.assign({ id: id(key), name: key, 'aria-describedby': hint ? id(key) + '-hint' : undefined }, attrs));
      return { input, node: App.el('div', { class: 'field' }, App.el('label', { for: id(key) }, label), input, hintOf(key, hint)) };
    };
    const check = (key, label, checked) => {
      const input = App.el('input', { id: id(key), name: key, type: 'checkbox', checked: !!checked });
      return { input, node: App.el('div', { class: 'field check' }, input, App.el('label', { for: id(key) }, label)) };
    };

    const d = dest || {};
    const name = field('name', 'Name', { type: 'text', required: true, maxLength: 200, value: d.name || '', autocomplete: 'off' });
    let typeSelect = null;
    let typeNode;
    if (editing) {
      typeNode = App.el('div', { class: 'field' }, App.el('span', { class: 'label' }, 'Type'),
        App.el('p', { id: id('type') }, Destinations.typeNames[d.type] || d.type, App.el('span', { class: 'muted' }, ' (cannot change)')));
    } else {
      typeSelect = App.el('select', { id: id('type'), name: 'type' },
        Object.entries(Destinations.typeNames).map(([v, label]) => App.el('option', { value: v }, label)));
      typeNode = App.el('div', { class: 'field' }, App.el('label', { for: id('type') }, 'Type'), typeSelect);
    }

    // The settings of each type, in fieldsets shown for the types that read them. A hidden
    // fieldset is also disabled, so that its required inputs do not block the form.
    const url = field('url', 'URL', { type: 'url', required: true, maxLength: 2000, value: d.url || '', placeholder: 'https://hooks.example.com/trackapi', spellcheck: 'false' },
      editing ? 'Shown without its query string, which may hold credentials: leave it as it is to keep it.'
        : 'webhook: the endpoint; forward: the other collector\'s base URL.');
    const allow = check('allow-private', 'Allow loopback and private addresses (refused by default)', d.allow_private);
    const site = field('site', 'Site on the other collector (tc_s)', { type: 'text', required: true, maxLength: 200, value: d.site || '' });
    const token = field('token', 'Source key on the other collector',
      { type: 'password', required: !editing, maxLength: 500, autocomplete: 'off', placeholder: editing && d.token_set ? 'set; leave empty to keep it' : '' },
      'Never shown again once saved.');
    const brokers = field('brokers', 'Brokers', { type: 'text', required: true, value: (d.brokers || []).join(', '), placeholder: 'kafka-1:9092, kafka-2:9092', spellcheck: 'false' },
      'host:port of each broker, comma-separated.');
    const topic = field('topic', 'Topic', { type: 'text', required: true, maxLength: 249, value: d.topic || '' });
    const path = field('path', 'Directory', { type: 'text', required: true, maxLength: 1000, value: d.path || '', placeholder: '/var/lib/trackapi/out', spellcheck: 'false' },
      'Hourly NDJSON files are written there, on the server.');
    const groups = [
      { types: ['webhook', 'forward'], node: App.el('fieldset', { id: id('endpoint') }, App.el('legend', {}, 'Endpoint'), url.node, allow.node) },
      { types: ['forward'], node: App.el('fieldset', { id: id('forward') }, App.el('legend', {}, 'Forwarding'), site.node, token.node) },
      { types: ['kafka'], node: App.el('fieldset', { id: id('kafka') }, App.el('legend', {}, 'Kafka'), brokers.node, topic.node) },
      { types: ['file'], node: App.el('fieldset', { id: id('file') }, App.el('legend', {}, 'Files'), path.node) },
    ];
    const type = () => editing ? d.type : typeSelect.value;
    const showType = () => {
      for (const g of groups) {
        const on = g.types.includes(type());
        g.node.hidden = !on;
        g.node.disabled = !on;
      }
    };
    if (typeSelect) typeSelect.addEventListener('change', showType);

    const sources = field('sources', 'Sources', { type: 'text', value: (d.sources || []).join(', '), placeholder: 'every source', inputMode: 'numeric' },
      'Source ids, comma-separated; empty for every source.');
    const consent = field('consent', 'Consent category', { type: 'text', maxLength: 100, value: d.consent_category || '' },
      'Send only events whose user.consent_categories contain it; empty to send every event.');
    const batch = field('batch-size', 'Batch size', { type: 'number', min: '1', max: '10000', step: '1', value: editing ? String(d.batch_size) : '', placeholder: '100' },
      'The most events a request carries (1 to 10000; 100 when empty).');

    // The condition filter builder.
    const f = d.filter || {};
    const include = field('event-names', 'Only these event names', { type: 'text', value: (f.event_names || []).join(', '), placeholder: 'every event name' },
      'Comma-separated; empty for every event name.');
    const exclude = field('exclude-event-names', 'Except these event names', { type: 'text', value: (f.exclude_event_names || []).join(', ') },
      'Comma-separated.');
    const rows = App.el('div', { id: id('conditions'), class: 'conditions' });
    const addButton = App.el('button', { type: 'button', id: id('add-condition'), class: 'secondary' }, 'Add a condition');
    let serial = 0;
    const renumber = () => {
      const all = [...rows.querySelectorAll('.condition')];
      all.forEach((row, i) => {
        row.setAttribute('aria-label', 'Condition ' + (i + 1));
        row.querySelector('[data-field="remove"]').setAttribute('aria-label', 'Remove condition ' + (i + 1));
      });
      addButton.disabled = all.length >= Destinations.maxConditions;
    };
    const addRow = (c) => {
      const k = ++serial;
      const cid = s => id('cond-' + k + '-' + s);
      const pathInput = App.el('input', { id: cid('path'), type: 'text', required: true, maxLength: 500, placeholder: '/page_type', 'data-field': 'path', value: c ? c.path : '', spellcheck: 'false' });
      const opSelect = App.el('select', { id: cid('op'), 'data-field': 'op' }, Destinations.ops.map(([v, label]) => App.el('option', { value: v }, label)));
      opSelect.value = c ? c.op : 'is';
      const value = c && c.value !== undefined && c.value !== null ? String(c.value) : '';
      const valueInput = App.el('input', { id: cid('value'), type: 'text', maxLength: 4096, 'data-field': 'value', value, spellcheck: 'false' });
      const valueBox = App.el('div', { class: 'cond-value' }, App.el('label', { for: cid('value') }, 'Value'), valueInput);
      const sync = () => {
        const none = Destinations.valueless.includes(opSelect.value);
        valueBox.hidden = none;
        valueInput.disabled = none;
      };
      opSelect.addEventListener('change', sync);
      const row = App.el('div', { class: 'condition', role: 'group' },
        App.el('div', {}, App.el('label', { for: cid('path') }, 'Path (JSON pointer)'), pathInput),
        App.el('div', {}, App.el('label', { for: cid('op') }, 'Operator'), opSelect),
        valueBox,
        App.el('button', {
          type: 'button', class: 'secondary remove', 'data-field': 'remove',
          onclick: () => {
            const next = row.nextElementSibling || row.previousElementSibling;
            row.remove();
            renumber();
            (next ? next.querySelector('input') : addButton).focus();
          },
        }, 'Remove'));
      sync();
      rows.append(row);
      renumber();
      return pathInput;
    };
    for (const c of f.conditions || []) addRow(c);
    addButton.addEventListener('click', () => addRow(null).focus());
    renumber();

    const filterSet = App.el('fieldset', { id: id('filter'), class: 'filter' },
      App.el('legend', {}, 'Condition filter'),
      App.el('p', { class: 'hint' }, 'An event is sent when its name passes both lists and every condition holds. A path is a JSON pointer into the event (/page_type, /user/consent_categories); values compare as strings. Events kept back are counted as filtered.'),
      App.el('div', { class: 'grid2' }, include.node, exclude.node),
      App.el('h3', { class: 'conditions-title' }, 'Conditions'),
      rows, addButton);

    const node = App.el('div', { class: 'dest-form' },
      App.el('div', { class: 'grid2' }, name.node, typeNode),
      groups.map(g => g.node),
      App.el('fieldset', { id: id('routing') }, App.el('legend', {}, 'What is sent'),
        App.el('div', { class: 'grid3' }, sources.node, consent.node, batch.node)),
      filterSet);
    showType();

    const readFilter = () => {
      const out = {};
      const inc = Destinations.words(include.input.value);
      const exc = Destinations.words(exclude.input.value);
      if (inc.length) out.event_names = inc;
      if (exc.length) out.exclude_event_names = exc;
      const conds = [...rows.querySelectorAll('.condition')].map(row => {
        const c = { path: row.querySelector('[data-field="path"]').value.trim(), op: row.querySelector('[data-field="op"]').value };
        if (!Destinations.valueless.includes(c.op)) c.value = row.querySelector('[data-field="value"]').value;
        return c;
      });
      for (const c of conds) {
        if (!c.path.startsWith('/')) throw new Error('Condition path "' + c.path + '" must be a JSON pointer starting with /, such as /page_type.');
      }
      if (conds.length) out.conditions = conds;
      return out;
    };
    const readSources = () => Destinations.words(sources.input.value).map(s => {
      if (!/^[1-9][0-9]{0,18}$/.test(s)) throw new Error('Sources: "' + s + '" is not a source id.');
      return Number(s);
    });
    const readBatch = () => {
      const v = batch.input.value.trim();
      if (v === '') return undefined;
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 10000) throw new Error('Batch size must be a whole number from 1 to 10000.');
      return n;
    };
    // canon is a filter as comparable text (values as strings, as the server compares them).
    const canon = fl => JSON.stringify([(fl && fl.event_names) || [], (fl && fl.exclude_event_names) || [],
      ((fl && fl.conditions) || []).map(c => [c.path, c.op, Destinations.valueless.includes(c.op) ? null : String(c.value)])]);

    return {
      node,
      focus() { name.input.focus(); },
      reset() {
        for (const input of node.querySelectorAll('input')) {
          if (input.type === 'checkbox') input.checked = false; else input.value = '';
        }
        if (typeSelect) typeSelect.value = 'webhook';
        rows.replaceChildren();
        renumber();
        showType();
      },
      // read gives the body of a create: only what was filled in.
      read() {
        const t = type();
        const body = { name: name.input.value.trim(), type: t };
        if (t === 'webhook' || t === 'forward') {
          body.url = url.input.value.trim();
          body.allow_private = allow.input.checked;
        }
        if (t === 'forward') {
          body.site = site.input.value.trim();
          body.token = token.input.value;
        }
        if (t === 'kafka') {
          body.brokers = Destinations.words(brokers.input.value);
          body.topic = topic.input.value.trim();
        }
        if (t === 'file') body.path = path.input.value.trim();
        const ids = readSources();
        if (ids.length) body.sources = ids;
        const c = consent.input.value.trim();
        if (c) body.consent_category = c;
        const bs = readBatch();
        if (bs !== undefined) body.batch_size = bs;
        const fl = readFilter();
        if (Object.keys(fl).length) body.filter = fl;
        return body;
      },
      // changes gives the body of a PATCH: the fields that differ from dest. The URL is sent only
      // when edited (the API shows it without its query string), the token only when typed.
      changes() {
        const out = {};
        const t = d.type;
        const n = name.input.value.trim();
        if (n !== d.name) out.name = n;
        if (t === 'webhook' || t === 'forward') {
          const u = url.input.value.trim();
          if (u !== (d.url || '')) out.url = u;
          if (allow.input.checked !== !!d.allow_private) out.allow_private = allow.input.checked;
        }
        if (t === 'forward') {
          if (site.input.value.trim() !== (d.site || '')) out.site = site.input.value.trim();
          if (token.input.value) out.token = token.input.value;
        }
        if (t === 'kafka') {
          const b = Destinations.words(brokers.input.value);
          if (b.join(',') !== (d.brokers || []).join(',')) out.brokers = b;
          if (topic.input.value.trim() !== (d.topic || '')) out.topic = topic.input.value.trim();
        }
        if (t === 'file' && path.input.value.trim() !== (d.path || '')) out.path = path.input.value.trim();
        const ids = readSources();
        if (ids.join(',') !== (d.sources || []).join(',')) out.sources = ids;
        const c = consent.input.value.trim();
        if (c !== (d.consent_category || '')) out.consent_category = c;
        const bs = readBatch();
        if (bs !== undefined && bs !== d.batch_size) out.batch_size = bs;
        const fl = readFilter();
        if (canon(fl) !== canon(d.filter)) out.filter = fl; // {} removes the filter
        return out;
      },
    };
  },

  // ---- the list screen ----

  async list(view) {
    const listBox = App.el('div', { id: 'destinations-list' }, App.el('p', { class: 'muted' }, 'Loading…'));
    const more = App.el('button', { type: 'button', id: 'destinations-more', class: 'secondary', hidden: true }, 'Show more');
    const created = App.el('div', { id: 'created' });
    const flash = App.el('p', { class: 'notice', role: 'status', id: 'destinations-flash', hidden: !Destinations.flash }, Destinations.flash || '');
    Destinations.flash = null;
    view.append(
      App.el('h1', {}, 'Destinations'),
      App.el('p', { class: 'lede' }, 'Where stored events are routed. Each destination keeps its own cursor over the event log, so a slow or failing one holds back only itself.'),
      flash,
      App.el('section', { 'aria-labelledby': 'destinations-list-title' },
        App.el('h2', { id: 'destinations-list-title', class: 'visually-hidden' }, 'All destinations'),
        listBox, more),
      created,
      Destinations.createSection(created, () => reload()));

    let rows = [];
    let after = null;
    const show = () => {
      listBox.replaceChildren(App.table([
        ['Name', d => App.el('a', { href: '#/destinations/' + d.id, 'data-destination-link': String(d.id) }, d.name)],
        ['Type', d => d.type],
        ['Status', d => Destinations.statusBadge(d.status)],
        ['Target', d => App.el('code', { class: 'target' }, Destinations.target(d))],
        ['Lag', d => Destinations.lag(d.state)],
        ['Retries', d => Destinations.number(d.state.retries)],
        ['Dead letters', d => d.state.dead_letters ? App.el('span', { class: 'bad' }, Destinations.number(d.state.dead_letters)) : '0'],
      ], rows, 'No destinations yet: create one below.'));
      more.hidden = !after;
    };
    const loadPage = async () => {
      const page = await App.api('GET', '/api/destinations?limit=100' + (after ? '&after=' + encodeURIComponent(after) : ''));
      rows = rows.concat(page.items);
      after = page.next || null;
      show();
    };
    const reload = async () => { rows = []; after = null; await loadPage(); };
    more.addEventListener('click', () => App.guard(loadPage));
    await loadPage();
  },

  // createSection is the create form; on success it shows the new destination (and a webhook's
  // signing secret, once) in `created` and calls onCreated.
  createSection(created, onCreated) {
    const form = Destinations.form('new', null);
    const msg = Destinations.messages('create');
    const submit = App.el('button', { type: 'submit', id: 'new-submit' }, 'Create destination');
    const formNode = App.el('form', { id: 'new-destination' }, form.node, App.el('div', { class: 'row' }, submit), msg.nodes);
    formNode.addEventListener('submit', async (e) => {
      e.preventDefault();
      const out = await msg.run([submit], async () => {
        const body = form.read();
        return App.api('POST', '/api/destinations', body);
      });
      if (!out) return;
      const d = out.destination;
      const link = App.el('a', { href: '#/destinations/' + d.id, id: 'created-link' }, 'Open ' + d.name);
      if (out.signing_secret) {
        const notice = Destinations.secretNotice('Destination ' + d.name + ' created: its signing secret', out.signing_secret, App.el('p', {}, link));
        created.replaceChildren(notice.box);
        notice.focus();
      } else {
        const heading = App.el('h3', { tabindex: '-1' }, 'Destination ' + d.name + ' created.');
        created.replaceChildren(App.el('div', { class: 'notice', id: 'created-notice' }, heading, App.el('p', {}, link)));
        heading.focus();
      }
      form.reset();
      await App.guard(onCreated);
    });
    return App.el('section', { 'aria-labelledby': 'new-destination-title', class: 'panel' },
      App.el('h2', { id: 'new-destination-title' }, 'New destination'),
      App.el('p', { class: 'hint' }, 'It receives the events stored from now on, within a second.'),
      formNode);
  },

  // ---- one destination's actions (on its page) ----

  // manage builds the action bar of a destination's page: pause or resume, edit, rotate the
  // signing secret (webhooks), delete. onChanged(dest) is called with the destination as changed.
  manage(dest, onChanged) {
    let d = dest;
    const msg = Destinations.messages('manage');
    const toggle = App.el('button', { type: 'button', id: 'toggle-status', class: 'secondary' });
    const editButton = App.el('button', { type: 'button', id: 'edit-toggle', class: 'secondary', 'aria-expanded': 'false', 'aria-controls': 'edit-panel' }, 'Edit settings');
    const rotateButton = App.el('button', { type: 'button', id: 'rotate-toggle', class: 'secondary', 'aria-expanded': 'false', 'aria-controls': 'rotate-panel' }, 'Rotate signing secret');
    const deleteButton = App.el('button', { type: 'button', id: 'delete-toggle', class: 'secondary danger-outline', 'aria-expanded': 'false', 'aria-controls': 'delete-panel' }, 'Delete…');
    const editPanel = App.el('div', { id: 'edit-panel', class: 'panel', hidden: true });
    const rotatePanel = App.el('div', { id: 'rotate-panel', class: 'panel', hidden: true });
    const deletePanel = App.el('div', { id: 'delete-panel', class: 'panel', hidden: true });
    const secretBox = App.el('div', { id: 'rotated' });

    const setOpen = (button, panel, open) => {
      panel.hidden = !open;
      button.setAttribute('aria-expanded', String(open));
    };
    const update = (nd) => {
      d = nd;
      toggle.textContent = d.status === 'paused' ? 'Resume delivery' : 'Pause delivery';
      rotateButton.hidden = d.type !== 'webhook';
      if (d.type !== 'webhook') setOpen(rotateButton, rotatePanel, false);
    };
    update(d);

    toggle.addEventListener('click', async () => {
      const status = d.status === 'paused' ? 'active' : 'paused';
      const nd = await msg.run([toggle], () => App.api('PATCH', '/api/destinations/' + d.id, { status }));
      if (!nd) return;
      msg.say(status === 'paused' ? 'Paused: its events wait in the event log.' : 'Resumed: delivery goes on from where it stopped.');
      update(nd);
      onChanged(nd);
    });

    // Edit: the form is built from the destination as it is when the panel opens.
    editButton.addEventListener('click', () => {
      const open = editPanel.hidden;
      setOpen(editButton, editPanel, open);
      if (!open) return;
      const form = Destinations.form('edit', d);
      const save = App.el('button', { type: 'submit', id: 'edit-save' }, 'Save changes');
      const cancel = App.el('button', { type: 'button', class: 'secondary', onclick: () => { setOpen(editButton, editPanel, false); editButton.focus(); } }, 'Cancel');
      const formNode = App.el('form', { id: 'edit-destination' }, App.el('h3', {}, 'Edit ' + d.name), form.node, App.el('div', { class: 'row' }, save, cancel));
      formNode.addEventListener('submit', async (e) => {
        e.preventDefault();
        const nd = await msg.run([save], async () => {
          const changes = form.changes();
          if (!Object.keys(changes).length) {
            msg.say('Nothing changed.');
            return null;
          }
          return App.api('PATCH', '/api/destinations/' + d.id, changes);
        });
        if (!nd) return;
        msg.say('Saved: a running server applies the change within a second.');
        setOpen(editButton, editPanel, false);
        update(nd);
        onChanged(nd);
        editButton.focus();
      });
      editPanel.replaceChildren(formNode);
      form.focus();
    });

    // Rotate: the new secret is shown once; the previous one signs too until the overlap ends.
    const overlap = App.el('select', { id: 'rotate-overlap' },
      App.el('option', { value: '0' }, 'at once'),
      App.el('option', { value: '3600' }, 'after 1 hour'),
      App.el('option', { value: '86400' }, 'after 24 hours'),
      App.el('option', { value: '604800' }, 'after 7 days'));
    overlap.value = '86400';
    const rotate = App.el('button', { type: 'button', id: 'rotate' }, 'Rotate now');
    rotatePanel.append(
      App.el('h3', {}, 'Rotate the signing secret'),
      App.el('p', { class: 'hint' }, 'Until the previous secret expires, requests carry both signatures, so receivers can switch without a gap.'),
      App.el('div', { class: 'row' },
        App.el('div', {}, App.el('label', { for: 'rotate-overlap' }, 'The previous secret stops signing'), overlap),
        rotate));
    rotateButton.addEventListener('click', () => setOpen(rotateButton, rotatePanel, rotatePanel.hidden));
    rotate.addEventListener('click', async () => {
      const out = await msg.run([rotate], () => App.api('POST', '/api/destinations/' + d.id + '/signing-secret',
        { expire_previous_after_seconds: Number(overlap.value) }));
      if (!out) return;
      let when = 'There was no previous secret.';
      if (out.previous_expire_at) {
        when = Date.parse(out.previous_expire_at) <= Date.now() ? 'The previous secret no longer signs.'
          : 'The previous secret signs too until ' + App.time(out.previous_expire_at) + '.';
      }
      const notice = Destinations.secretNotice('New signing secret (' + out.prefix + '…)', out.signing_secret, App.el('p', {}, when));
      secretBox.replaceChildren(notice.box);
      setOpen(rotateButton, rotatePanel, false);
      notice.focus();
      const nd = await App.guard(() => App.api('GET', '/api/destinations/' + d.id));
      if (nd) { update(nd); onChanged(nd); }
    });

    // Delete, after a confirmation in the page.
    const confirmDelete = App.el('button', { type: 'button', id: 'delete-confirm', class: 'danger' }, 'Delete destination');
    const keep = App.el('button', { type: 'button', class: 'secondary', onclick: () => { setOpen(deleteButton, deletePanel, false); deleteButton.focus(); } }, 'Keep it');
    deleteButton.addEventListener('click', () => {
      const open = deletePanel.hidden;
      deletePanel.replaceChildren(
        App.el('h3', {}, 'Delete ' + d.name + '?'),
        App.el('p', {}, 'Its retries, dead letters, statistics and issues are deleted with it. The events stay in the event log.'),
        App.el('div', { class: 'row' }, confirmDelete, keep));
      setOpen(deleteButton, deletePanel, open);
      if (open) keep.focus();
    });
    confirmDelete.addEventListener('click', async () => {
      const done = await msg.run([confirmDelete], async () => { await App.api('DELETE', '/api/destinations/' + d.id); return true; });
      if (!done) return;
      Destinations.flash = 'Deleted destination ' + d.name + '.';
      location.hash = '#/destinations';
    });

    return {
      node: App.el('div', { class: 'manage' },
        App.el('div', { class: 'row actions', role: 'group', 'aria-label': 'Actions' }, toggle, editButton, rotateButton, deleteButton),
        msg.nodes, secretBox, editPanel, rotatePanel, deletePanel),
      update,
    };
  },

  // testPanel sends a test event to the destination, or shows the request without sending it.
  testPanel(dest) {
    const area = App.el('textarea', {
      id: 'test-event', rows: 6, spellcheck: 'false', 'aria-describedby': 'test-event-hint test-event-error',
      placeholder: '{"event_name": "purchase", "value": 42.5, "currency": "EUR"}',
    });
    const fieldError = App.el('p', { id: 'test-event-error', class: 'action-error', role: 'alert', hidden: true });
    const dry = App.el('button', { type: 'button', id: 'test-dry-run', class: 'secondary' }, 'Dry run');
    const send = App.el('button', { type: 'button', id: 'test-send' }, 'Send test');
    const msg = Destinations.messages('test');
    const result = App.el('div', { id: 'test-result' });

    const readEvent = () => {
      fieldError.hidden = true;
      area.removeAttribute('aria-invalid');
      const text = area.value.trim();
      if (!text) return { ok: true, event: undefined };
      let event;
      let problem = null;
      try {
        event = JSON.parse(text);
        if (event === null || typeof event !== 'object' || Array.isArray(event)) problem = 'The event must be a JSON object, {…}.';
      } catch (e) {
        problem = 'The event is not valid JSON: ' + e.message;
      }
      if (problem) {
        fieldError.textContent = problem;
        fieldError.hidden = false;
        area.setAttribute('aria-invalid', 'true');
        area.focus();
        return { ok: false };
      }
      return { ok: true, event };
    };

    const go = async (dryRun) => {
      const ev = readEvent();
      if (!ev.ok) return;
      const body = { dry_run: dryRun };
      if (ev.event !== undefined) body.event = ev.event;
      const out = await msg.run([dry, send], () => App.api('POST', '/api/destinations/' + dest.id + '/test', body),
        dryRun ? 'Preparing the request…' : 'Sending…');
      if (!out) return;
      msg.say('');
      let outcome;
      if (out.dry_run) {
        outcome = App.el('p', { id: 'test-outcome', class: 'muted' }, 'Dry run: nothing was sent. This is the request the destination would get (credentials redacted).');
      } else if (out.delivered) {
        outcome = App.el('p', { id: 'test-outcome', class: 'ok' }, 'Delivered: the destination took the event.');
      } else {
        outcome = App.el('p', { id: 'test-outcome', class: 'bad' }, 'Not delivered: ' + (out.reason || 'unknown reason') + (out.error ? ' — ' + out.error : ''));
      }
      // The API returns the destination's answer only when the delivery failed (a success keeps
      // no sample), so a delivered test says so instead of showing an answer.
      const noAnswer = !out.dry_run && !out.response
        ? App.el('p', { class: 'muted', id: 'test-no-response' }, out.delivered
          ? 'The destination accepted it (a 2xx for an HTTP destination); its answer is kept only when a delivery fails.'
          : 'No answer came.')
        : null;
      result.replaceChildren(
        App.el('h3', { id: 'test-result-title', tabindex: '-1' }, out.dry_run ? 'Dry run' : 'Test result'),
        outcome,
        Destinations.exchange(out.request, out.dry_run ? null : out.response, 4));
      if (noAnswer) result.append(noAnswer);
      result.querySelector('#test-result-title').focus();
    };
    dry.addEventListener('click', () => go(true));
    send.addEventListener('click', () => go(false));

    return App.el('section', { 'aria-labelledby': 'test-title', id: 'test', class: 'panel' },
      App.el('h2', { id: 'test-title' }, 'Test'),
      App.el('p', { class: 'hint', id: 'test-event-hint' }, 'Sends one event now, outside the queue and the filters: the event given, or a sample page_view when empty. A dry run only shows the request.'),
      App.el('label', { for: 'test-event' }, 'Event (JSON, optional)'),
      area, fieldError,
      App.el('div', { class: 'row' }, dry, send),
      msg.nodes, result);
  },
};

App.route('destinations', (view, params) => {
  if (params.length && params[0] !== '') return Delivery.page(view, params[0]);
  return Destinations.list(view);
});
