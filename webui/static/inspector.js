'use strict';
// The inspector screen (#/inspector, or #/inspector/SOURCE_ID filtered to that source): the newest
// entries, then a live tail of /api/inspector/stream with pause and resume, filters that restart
// it, and one entry at a time with its body pretty-printed and each problem's path highlighted.
// It also defines App.jsonView, which the data-quality screen uses for its samples. See app.js
// for App.
(() => {
  const MAX_ROWS = 500;          // the table keeps the newest; older ones are a filter away
  const FIRST_PAGE = 50;
  const RETRY_MIN_MS = 1000, RETRY_MAX_MS = 30000;
  const OUTCOMES = ['accepted', 'warned', 'duplicate', 'rejected', 'refused'];

  // --- JSON, pretty-printed with problems highlighted -------------------------------------------

  // parseJSON parses text into a tree that keeps every number and string as written (JSON.parse
  // would round integers past 2^53 and turn 1.0 into 1; the inspector shows the event as stored).
  // Nodes: {type: 'object', members: [{key, raw, value}]}, {type: 'array', items}, and
  // {type: 'string' | 'number' | 'literal', raw}.
  function parseJSON(text) {
    let i = 0;
    const fail = () => { throw new SyntaxError('not JSON at ' + i); };
    const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++; };
    const scalar = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null/y;
    function string() {
      if (text[i] !== '"') fail();
      const start = i++;
      while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
      if (i >= text.length) fail();
      i++;
      return text.slice(start, i);
    }
    function value() {
      ws();
      const c = text[i];
      if (c === '{') {
        i++;
        const members = [];
        ws();
        if (text[i] === '}') { i++; return { type: 'object', members }; }
        for (;;) {
          ws();
          const raw = string();
          ws();
          if (text[i++] !== ':') fail();
          members.push({ key: JSON.parse(raw), raw, value: value() });
          ws();
          if (text[i] === ',') { i++; continue; }
          if (text[i++] !== '}') fail();
          return { type: 'object', members };
        }
      }
      if (c === '[') {
        i++;
        const items = [];
        ws();
        if (text[i] === ']') { i++; return { type: 'array', items }; }
        for (;;) {
          items.push(value());
          ws();
          if (text[i] === ',') { i++; continue; }
          if (text[i++] !== ']') fail();
          return { type: 'array', items };
        }
      }
      if (c === '"') return { type: 'string', raw: string() };
      scalar.lastIndex = i;
      const m = scalar.exec(text);
      if (!m) fail();
      i += m[0].length;
      return { type: m[0][0] === '-' || (m[0][0] >= '0' && m[0][0] <= '9') ? 'number' : 'literal', raw: m[0] };
    }
    const root = value();
    ws();
    if (i !== text.length) fail();
    return root;
  }

  // member returns the value of key in an object node (the last one, as JSON readers do).
  function member(node, key) {
    if (!node || node.type !== 'object') return undefined;
    let found;
    for (const m of node.members) if (m.key === key) found = m.value;
    return found;
  }

  // pointerSegments splits a JSON pointer (RFC 6901). A path without its leading slash (as a
  // hand-written example may give) is taken as one below the root.
  function pointerSegments(path) {
    if (!path) return [];
    const p = path.startsWith('/') ? path.slice(1) : path;
    return p.split('/').map(s => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  }
  const escapeSegment = s => String(s).replace(/~/g, '~0').replace(/\//g, '~1');

  function child(node, seg) {
    if (node.type === 'object') return member(node, seg);
    if (node.type === 'array' && /^(0|[1-9]\d*)$/.test(seg)) return node.items[Number(seg)];
    return undefined;
  }

  const LEVEL_ORDER = { warning: 1, error: 2 };
  const worst = (a, b) => (LEVEL_ORDER[a] || 0) >= (LEVEL_ORDER[b] || 0) ? a : b;

  // jsonView renders a JSON text (or a value) in a <pre> with the paths of problems marked: each
  // problem is {code, path, message, level: 'error' | 'warning'}. A path that is in the document
  // marks its member; one that is not (a missing property) adds a line "missing" in the deepest
  // object or array that is there; the empty path marks the whole document. attrs are the
  // <pre>'s. Returns {pre, marks}, marks mapping each problem's path to its <mark>.
  function jsonView(source, problems, attrs) {
    return treeView(parseJSON(typeof source === 'string' ? source : JSON.stringify(source)), problems, attrs);
  }

  // treeView is jsonView of a tree parseJSON made.
  function treeView(root, problems, attrs) {
    const el = App.el;
    const marked = new Map();   // pointer → {level, problems}
    const ghosts = new Map();   // pointer of a container → [{label, level, problems, path}]
    let rootLevel = null;
    for (const p of problems || []) {
      const segs = pointerSegments(p.path);
      let node = root, ptr = '', n = 0;
      for (; n < segs.length; n++) {
        const next = child(node, segs[n]);
        if (next === undefined) break;
        node = next;
        ptr += '/' + escapeSegment(segs[n]);
      }
      if (n === segs.length || (node.type !== 'object' && node.type !== 'array')) {
        if (ptr === '') { rootLevel = worst(rootLevel, p.level); continue; }
        const m = marked.get(ptr) || { level: null, problems: [], path: p.path };
        m.level = worst(m.level, p.level);
        m.problems.push(p);
        marked.set(ptr, m);
        continue;
      }
      const list = ghosts.get(ptr) || [];
      const label = segs.slice(n).join('/');
      let g = list.find(x => x.label === label);
      if (!g) { g = { label, level: null, problems: [], path: p.path, array: node.type === 'array' }; list.push(g); }
      g.level = worst(g.level, p.level);
      g.problems.push(p);
      ghosts.set(ptr, list);
    }

    const marks = new Map();
    const pad = depth => '  '.repeat(depth);
    const describe = list => list.map(p => p.code + (p.message ? ': ' + p.message : '')).join('\n');
    function markFor(info) {
      const mark = el('mark', { class: 'problem problem-' + info.level, 'data-path': info.path, tabindex: '-1',
        title: describe(info.problems) });
      if (!marks.has(info.path)) marks.set(info.path, mark);
      for (const p of info.problems) if (!marks.has(p.path)) marks.set(p.path, mark);
      return mark;
    }
    function scalar(node) {
      const cls = node.type === 'string' ? 'j-str' : node.type === 'number' ? 'j-num' : 'j-lit';
      return el('span', { class: cls }, node.raw);
    }
    function emit(parent, node, ptr, depth) {
      if (node.type !== 'object' && node.type !== 'array') { parent.append(scalar(node)); return; }
      const isObject = node.type === 'object';
      const entries = isObject
        ? node.members.map(m => ({ label: m.raw, node: m.value, ptr: ptr + '/' + escapeSegment(m.key) }))
        : node.items.map((v, k) => ({ label: null, node: v, ptr: ptr + '/' + k }));
      const missing = ghosts.get(ptr) || [];
      const [open, close] = isObject ? ['{', '}'] : ['[', ']'];
      if (!entries.length && !missing.length) { parent.append(open + close); return; }
      parent.append(open + '\n');
      const total = entries.length + missing.length;
      let n = 0;
      for (const e of entries) {
        n++;
        parent.append(pad(depth + 1));
        const info = marked.get(e.ptr);
        const target = info ? markFor(info) : parent;
        if (info) parent.append(target);
        if (e.label !== null) target.append(el('span', { class: 'j-key' }, e.label), ': ');
        emit(target, e.node, e.ptr, depth + 1);
        parent.append((n < total ? ',' : '') + '\n');
      }
      for (const g of missing) {
        n++;
        const mark = markFor(g);
        mark.classList.add('missing');
        mark.append(g.array ? '[' + g.label + ']' : el('span', { class: 'j-key' }, JSON.stringify(g.label)),
          g.array ? ' ' : ': ', el('em', {}, 'missing'));
        parent.append(pad(depth + 1), mark, (n < total ? ',' : '') + '\n');
      }
      parent.append(pad(depth) + close);
    }
    const pre = el('pre', Object.assign({ class: 'json' + (rootLevel ? ' problem-root problem-root-' + rootLevel : '') }, attrs || {}));
    emit(pre, root, '', 0);
    return { pre, marks };
  }
  App.jsonView = jsonView;

  // --- the screen ---------------------------------------------------------------------------------

  // problemLevel: the problems of an entry not stored are its rejection (errors); those of a
  // stored one (or a duplicate) are warnings (inspector.go: "Problems are the event's warnings,
  // or its rejection, or the request's refusal").
  const problemLevel = outcome => (outcome === 'rejected' || outcome === 'refused') ? 'error' : 'warning';

  // hms is an entry's time: of day for today's, with the date for older ones (kept 7 days).
  function hms(t) {
    const d = new Date(t);
    if (isNaN(d)) return '—';
    const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
    return d.toDateString() === new Date().toDateString() ? time : d.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ' ' + time;
  }

  function codesText(e) {
    const codes = (e.codes || []).join(', ');
    return e.reason ? codes + ' (' + e.reason + ')' : codes;
  }

  function sourceText(e) {
    return 'site ' + e.site + ' · ' + (e.source_id ? 'source ' + e.source_id : 'no source');
  }

  App.route('inspector', async (view, params) => {
    const el = App.el;
    let controller = null;   // aborts the current list and stream
    let paused = false;
    let waiting = [];        // entries received while paused, oldest first
    let waitingCount = 0;
    let selected = null;     // the id shown in the detail

    const sources = await App.api('GET', '/api/sources?limit=1000');
    const sourceSelect = el('select', { id: 'filter-source', name: 'source_id' },
      el('option', { value: '' }, 'Any source'),
      el('option', { value: '0' }, '0 — no source (unknown or missing key)'),
      sources.items.map(s => el('option', { value: String(s.id) }, s.id + ' — site ' + s.site + (s.name ? ' — ' + s.name : ''))));
    if (params[0] && /^\d+$/.test(params[0])) {
      if (![...sourceSelect.options].some(o => o.value === params[0])) sourceSelect.append(el('option', { value: params[0] }, params[0]));
      sourceSelect.value = params[0];
    }
    const outcomeSelect = el('select', { id: 'filter-outcome', name: 'outcome' },
      el('option', { value: '' }, 'Any outcome'), OUTCOMES.map(o => el('option', { value: o }, o)));
    const filters = el('form', { id: 'inspector-filters', class: 'filters', 'aria-label': 'Filters' },
      el('div', {}, el('label', { for: 'filter-source' }, 'Source'), sourceSelect),
      el('div', {}, ...App.field('filter-event', 'Event name', { name: 'event_name', maxLength: 200, autocomplete: 'off' })),
      el('div', {}, el('label', { for: 'filter-outcome' }, 'Outcome'), outcomeSelect),
      el('div', {}, ...App.field('filter-code', 'Code or reason', { name: 'code', maxLength: 100, autocomplete: 'off',
        placeholder: 'e.g. unknown_key' })),
      el('div', {}, ...App.field('filter-test-code', 'Test code', { name: 'test_code', maxLength: 200, autocomplete: 'off' })),
      el('div', { class: 'filter-buttons' },
        el('button', { type: 'submit', id: 'filter-apply' }, 'Apply'),
        el('button', { type: 'reset', class: 'secondary', id: 'filter-clear' }, 'Clear')));

    const status = el('span', { id: 'stream-status', role: 'status', 'data-state': 'starting' }, 'Starting…');
    const pauseButton = el('button', { type: 'button', id: 'pause', 'aria-controls': 'inspector-rows' }, 'Pause');
    const rows = el('tbody', { id: 'inspector-rows' });
    const empty = el('p', { id: 'inspector-empty', class: 'muted' }, 'No entries match yet. New ones appear here as they arrive.');
    const table = el('table', { id: 'inspector-table', class: 'entries', hidden: true },
      el('caption', { class: 'visually-hidden' }, 'Inspected events, newest first'),
      el('thead', {}, el('tr', {}, ['Time', 'Outcome', 'Event', 'Codes', 'Site / source', 'Key prefix'].map(h =>
        el('th', { scope: 'col' }, h)))),
      rows);
    const detail = el('section', { id: 'entry-detail', class: 'entry-detail', 'aria-label': 'Selected entry' },
      el('p', { class: 'muted' }, 'Select an entry (its time) to see the event with its problems.'));

    view.append(
      el('div', { class: 'inspector-screen' },
        el('h1', {}, 'Inspector'),
        el('p', { class: 'muted' }, 'What the collect API did with each event it received (sampled; events with a test_code are all kept). The newest first; new ones arrive live.'),
        filters,
        el('div', { class: 'stream-bar' }, pauseButton, status),
        el('div', { class: 'inspector-panes' },
          el('div', { class: 'entries-pane' }, empty, table),
          detail)));

    function query() {
      const q = new URLSearchParams();
      for (const [name, input] of [['source_id', sourceSelect], ['event_name', filters.querySelector('#filter-event')],
        ['outcome', outcomeSelect], ['code', filters.querySelector('#filter-code')], ['test_code', filters.querySelector('#filter-test-code')]]) {
        const v = input.value.trim();
        if (v !== '') q.set(name, v);
      }
      return q;
    }

    function setStatus(state, text) {
      status.dataset.state = state;
      status.textContent = text;
    }
    function showPaused() {
      setStatus('paused', 'Paused: ' + waitingCount + (waitingCount === 1 ? ' new entry' : ' new entries') + ' waiting');
    }

    function row(e) {
      const open = el('button', { type: 'button', class: 'link', 'data-entry-id': String(e.id),
        'aria-label': 'Show entry ' + e.id + ' at ' + hms(e.at) + ', ' + (e.event_name || 'no event name') + ', ' + e.outcome,
        'aria-pressed': String(selected === e.id), onclick: () => App.guard(() => show(e.id)) }, hms(e.at));
      open.title = App.time(e.at);
      return el('tr', { 'data-entry-id': String(e.id), 'data-outcome': e.outcome, class: selected === e.id ? 'selected' : '' },
        el('td', { class: 'time' }, open),
        el('td', { class: 'outcome-cell' }, el('span', { class: 'outcome outcome-' + e.outcome }, e.outcome)),
        el('td', {}, e.event_name || el('span', { class: 'muted' }, '(none)'), e.test_code ? el('span', { class: 'tag', title: 'test_code' }, e.test_code) : ''),
        el('td', { class: 'codes' }, codesText(e)),
        el('td', {}, sourceText(e)),
        el('td', { class: 'prefix' }, e.key_prefix ? el('code', {}, e.key_prefix) : el('span', { class: 'muted' }, '—')));
    }

    // add puts entries (newest first) at the top of the table, keeping MAX_ROWS.
    function add(entries) {
      if (!entries.length) return;
      rows.prepend(...entries.map(row));
      while (rows.children.length > MAX_ROWS) rows.lastElementChild.remove();
      empty.hidden = true;
      table.hidden = false;
    }

    function onEntry(entry) {
      if (paused) {
        waiting.push(entry);
        if (waiting.length > MAX_ROWS) waiting.shift();
        waitingCount++;
        showPaused();
        return;
      }
      add([entry]);
    }

    pauseButton.addEventListener('click', () => {
      paused = !paused;
      pauseButton.textContent = paused ? 'Resume' : 'Pause';
      if (paused) { showPaused(); return; }
      add(waiting.slice().reverse());
      waiting = [];
      waitingCount = 0;
      setStatus('live', 'Live');
    });

    // run lists the newest entries, then streams the ones after them until signal aborts,
    // reconnecting (from the last id received) when the stream ends or fails.
    async function run(signal) {
      const q = query();
      rows.replaceChildren();
      empty.hidden = false;
      table.hidden = true;
      waiting = [];
      waitingCount = 0;
      setStatus('starting', 'Loading…');
      // The newest id of all first: entries that match and come after it are then either in the
      // page below or in the stream, with no gap between the two, even when no entry matches yet.
      const newest = await App.api('GET', '/api/inspector/events?limit=1', undefined, { signal });
      q.set('limit', String(FIRST_PAGE));
      const page = await App.api('GET', '/api/inspector/events?' + q, undefined, { signal });
      q.delete('limit');
      add(page.items);
      let lastId = Math.max(0, ...newest.items.map(e => e.id), ...page.items.map(e => e.id));
      let delay = RETRY_MIN_MS;
      while (!signal.aborted) {
        try {
          const started = Date.now();
          if (paused) showPaused(); else setStatus('live', 'Live');
          await App.stream('/api/inspector/stream?' + q, (id, entry) => {
            lastId = Number(id) || entry.id;
            onEntry(entry);
          }, signal, String(lastId));
          if (Date.now() - started > 10000) delay = RETRY_MIN_MS;
          setStatus('retrying', 'The stream ended; reconnecting…');
        } catch (err) {
          if (signal.aborted) return;
          setStatus('retrying', 'Stream: ' + err.message + ' — retrying in ' + Math.round(delay / 1000) + ' s');
        }
        await new Promise(resolve => {
          const timer = setTimeout(resolve, delay);
          signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
        });
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      }
    }

    function restart() {
      if (controller) controller.abort();
      controller = new AbortController();
      const signal = controller.signal;
      App.guard(() => run(signal).catch(err => {
        if (!signal.aborted) setStatus('failed', 'Stopped: ' + err.message);
        throw err;
      }));
    }

    // show fetches one entry and shows it with its body and problems.
    async function show(id) {
      selected = id;
      for (const b of rows.querySelectorAll('button[data-entry-id]')) {
        const on = b.dataset.entryId === String(id);
        b.setAttribute('aria-pressed', String(on));
        b.closest('tr').classList.toggle('selected', on);
      }
      const text = await App.api('GET', '/api/inspector/events/' + id, undefined, { raw: true });
      const entry = JSON.parse(text);
      const level = problemLevel(entry.outcome);
      const problems = (entry.problems || []).map(p => Object.assign({ level }, p));
      let bodyView, marks = new Map();
      const body = member(parseJSON(text), 'body');
      if (!body || body.type === 'literal' && body.raw === 'null') {
        bodyView = el('p', { class: 'muted' }, 'No body was kept for this entry.');
      } else if (body.type === 'string') {
        bodyView = el('div', {},
          el('p', { class: 'muted' }, entry.outcome === 'refused'
            ? 'The start of the refused request\'s body, as text:'
            : 'The body was longer than the inspector keeps: its start, as text:'),
          el('pre', { id: 'entry-json', class: 'json text' + (problems.length ? ' problem-root problem-root-' + level : '') }, JSON.parse(body.raw)));
      } else {
        const v = treeView(body, problems, { id: 'entry-json' });
        bodyView = v.pre;
        marks = v.marks;
      }
      const facts = [
        ['Received', App.time(entry.at)],
        ['Outcome', el('span', { class: 'outcome outcome-' + entry.outcome }, entry.outcome)],
        ['Event name', entry.event_name || '(none)'],
        ['Event id', entry.event_id || '—'],
        ['Codes', codesText(entry) || '—'],
        ['Site / source', sourceText(entry)],
        ['Key prefix', entry.key_prefix || '—'],
        ['Client address', entry.client_ip || '—'],
        ['Test code', entry.test_code || '—'],
        ['In a batch', entry.batch_index === undefined ? 'no' : 'yes, at index ' + entry.batch_index],
      ];
      const heading = el('h2', { id: 'entry-title', tabindex: '-1' }, 'Entry ' + entry.id + ': ' +
        (entry.outcome === 'refused' ? 'a refused request' : entry.event_name || '(no event name)'));
      detail.replaceChildren(
        el('div', { class: 'detail-head' }, heading,
          el('button', { type: 'button', class: 'secondary', id: 'entry-close', onclick: () => {
            selected = null;
            detail.replaceChildren(el('p', { class: 'muted' }, 'Select an entry (its time) to see the event with its problems.'));
            for (const b of rows.querySelectorAll('button[aria-pressed="true"]')) { b.setAttribute('aria-pressed', 'false'); b.closest('tr').classList.remove('selected'); }
          } }, 'Close')),
        el('dl', { class: 'facts' }, facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])),
        el('h3', {}, 'Event'),
        bodyView,
        el('h3', {}, 'Problems'),
        problems.length
          ? el('ul', { id: 'entry-problems', class: 'problems' }, problems.map(p => {
            const mark = marks.get(p.path);
            return el('li', { 'data-code': p.code, 'data-level': p.level, 'data-path': p.path, class: 'problem-item problem-item-' + p.level },
              el('span', { class: 'level level-' + p.level }, p.level), ' ',
              el('code', { class: 'code' }, p.code), ' at ',
              el('code', { class: 'path' }, p.path || (entry.outcome === 'refused' ? '(the whole request)' : '(the whole event)')), ': ',
              el('span', {}, p.message),
              mark ? [' ', el('button', { type: 'button', class: 'link', 'aria-label': 'Show ' + (p.path || 'the event') + ' in the event',
                onclick: () => { mark.scrollIntoView({ block: 'center' }); mark.focus(); } }, 'show')] : '');
          }))
          : el('p', { class: 'muted', id: 'entry-problems-none' }, 'None.'));
      heading.focus();
    }

    filters.addEventListener('submit', (e) => { e.preventDefault(); restart(); });
    filters.addEventListener('reset', () => { setTimeout(restart, 0); });
    sourceSelect.addEventListener('change', restart);
    outcomeSelect.addEventListener('change', restart);

    restart();
    return () => { if (controller) controller.abort(); };
  });
})();
