// stackline's live flame graph: fetches a view from api/flamegraph, draws
// it as SVG (only frames at least a pixel wide), and follows api/events
// to redraw as intervals complete. No dependencies.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const ROW = 18; // px per frame row
  const MIN_PX = 1; // narrower frames (and their callees) are not drawn
  const CHAR_PX = 6.6; // average glyph width at 11px
  const KINDS = {
    root: 'root', process: 'process', kernel: 'kernel', native: 'native', go: 'go',
    cpython: 'cpython', python: 'cpython', jvm: 'jvm', java: 'jvm', hotspot: 'jvm',
    v8js: 'v8js', v8: 'v8js', js: 'v8js', node: 'v8js', abort: 'abort',
  };
  const KIND_NAMES = {
    root: 'all', process: 'process', kernel: 'kernel', native: 'native', go: 'Go',
    cpython: 'Python', jvm: 'Java', v8js: 'JavaScript', abort: 'unwinding stopped', other: 'other',
  };
  const TYPE_NAMES = { samples: 'CPU', off_cpu: 'Off-CPU' };

  const ui = {
    window: $('window'), type: $('type'), typeLabel: $('type-label'), process: $('process'),
    thread: $('thread'), search: $('search'), icicle: $('icicle'), live: $('live'),
    reset: $('reset'), download: $('download'), status: $('status'), match: $('match'),
    chart: $('chart'), svg: $('graph'), tooltip: $('tooltip'),
  };

  let g = null; // the current graph, prepared
  let zoom = 0; // index of the zoomed node
  let zoomPath = []; // names from the root's child to the zoomed node
  let matchFn = null; // Uint8Array: function i matches the search
  // A load in flight, a load asked for since (a view changed), the newest
  // version announced since, and the version shown.
  let loading = false, pending = false, announced = -1, lastVersion = -1;

  // ---- data ----

  function viewParams() {
    const p = new URLSearchParams();
    p.set('window', ui.window.value);
    if (ui.type.value) p.set('type', ui.type.value);
    const proc = ui.process.value;
    if (proc) {
      const [name, pid] = proc.split('\u0000');
      p.set('process', name);
      if (pid) p.set('pid', pid);
    }
    if (ui.thread.value) p.set('thread', ui.thread.value);
    return p;
  }

  async function load() {
    if (loading) { pending = true; return; }
    loading = true;
    const t0 = performance.now();
    let ok = false;
    try {
      const res = await fetch('api/flamegraph?' + viewParams(), { cache: 'no-store' });
      if (!res.ok) throw new Error(res.status + ' ' + (await res.text()));
      const data = await res.json();
      lastVersion = data.version;
      g = prepare(data);
      document.body.dataset.loadMs = (performance.now() - t0).toFixed(1);
      document.body.dataset.nodes = g.n;
      updateControls(data);
      computeMatches();
      zoom = findPath(zoomPath);
      render();
      ok = true;
    } catch (err) {
      ui.status.textContent = 'Could not load the flame graph: ' + err.message;
    } finally {
      loading = false;
      // After a failure, only a change of view tries again at once.
      if (pending || (ok && announced > lastVersion)) { pending = false; load(); }
    }
  }

  // announce loads the view again for a new version, unless it is shown
  // already or the load in flight will show it.
  function announce(version) {
    announced = Math.max(announced, version);
    if (!loading && announced > lastVersion) load();
  }

  // prepare turns the columns into typed arrays and computes each node's
  // x offset, parent and the end of its subtree (nodes are depth-first).
  function prepare(d) {
    const n = d.nodes.fn.length;
    const fn = Uint32Array.from(d.nodes.fn);
    const depth = Int32Array.from(d.nodes.depth);
    const total = Float64Array.from(d.nodes.total);
    const self = Float64Array.from(d.nodes.self);
    const line = d.nodes.line;
    const x = new Float64Array(n), parent = new Int32Array(n), end = new Int32Array(n);
    const cursor = [0], open = [];
    let maxDepth = 0;
    for (let i = 0; i < n; i++) {
      const dep = depth[i];
      while (open.length && depth[open[open.length - 1]] >= dep) end[open.pop()] = i;
      parent[i] = open.length ? open[open.length - 1] : -1;
      x[i] = cursor[dep];
      cursor[dep] += total[i];
      cursor[dep + 1] = x[i];
      open.push(i);
      if (dep > maxDepth) maxDepth = dep;
    }
    while (open.length) end[open.pop()] = n;
    const kind = d.kind.map((k) => KINDS[d.kinds[k]] || 'other');
    return { d, n, fn, depth, total, self, line, x, parent, end, kind, maxDepth };
  }

  // findPath returns the node reached from the root by names, or the
  // deepest found.
  function findPath(path) {
    if (!g || g.n === 0) return 0;
    let i = 0;
    for (const name of path) {
      let c = i + 1, found = -1;
      while (c < g.end[i]) {
        if (g.d.names[g.fn[c]] === name) { found = c; break; }
        c = g.end[c];
      }
      if (found < 0) break;
      i = found;
    }
    return i;
  }

  function pathOf(i) {
    const path = [];
    for (; i > 0; i = g.parent[i]) path.push(g.d.names[g.fn[i]]);
    return path.reverse();
  }

  // ---- controls ----

  // setOptions lists options ([value, label], sorted by label) after the
  // select's first, keeping its selection; an unchanged list is left alone
  // (a page refreshed each second must not close an open list).
  function setOptions(select, options) {
    const want = select.value;
    options.sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    const sig = JSON.stringify(options);
    if (select.dataset.sig === sig && (want === '' || options.some((o) => o[0] === want))) return;
    select.dataset.sig = sig;
    const first = select.options[0];
    const frag = document.createDocumentFragment();
    frag.appendChild(first);
    let found = want === first.value;
    for (const [value, label] of options) {
      const o = document.createElement('option');
      o.value = value;
      o.textContent = label;
      if (value === want) found = true;
      frag.appendChild(o);
    }
    if (!found) { // keep a selection that the window no longer shows
      const o = document.createElement('option');
      o.value = want;
      o.textContent = want.replace('\u0000', ' [') + (want.includes('\u0000') ? ']' : '') + ' (no samples)';
      frag.appendChild(o);
    }
    select.replaceChildren(frag);
    select.value = want;
  }

  function updateControls(d) {
    for (const o of ui.window.options) o.disabled = Number(o.value) > d.history;
    // The profile switch (CPU / Off-CPU) shows once the store holds a
    // second sample type, and stays while one other than the first is
    // chosen, even when the window no longer holds it.
    const types = d.types.map((t) => t.type);
    if (!types.includes(d.type)) types.push(d.type);
    if (types.length > 1) {
      ui.typeLabel.hidden = false;
      const sig = JSON.stringify(types) + d.type;
      if (ui.type.dataset.sig !== sig) {
        ui.type.dataset.sig = sig;
        ui.type.replaceChildren(...types.map((t) => new Option(TYPE_NAMES[t] || t, t, false, t === d.type)));
      }
    }
    document.body.dataset.type = d.type;
    const byName = new Map();
    for (const p of d.processes) byName.set(p.name, (byName.get(p.name) || 0) + 1);
    const procs = [];
    const named = new Set();
    for (const p of d.processes) {
      if (byName.get(p.name) > 1 && !named.has(p.name)) {
        named.add(p.name);
        procs.push([p.name, p.name + ' (' + byName.get(p.name) + ' processes)']);
      }
      procs.push([p.name + '\u0000' + p.pid, p.name + ' [' + p.pid + ']']);
    }
    setOptions(ui.process, procs);
    setOptions(ui.thread, d.threads.map((t) => [t.name, t.name || '(unnamed)']));
  }

  // ---- search ----

  function computeMatches() {
    matchFn = null;
    const text = ui.search.value.trim();
    if (!g || !text) return;
    let re;
    try { re = new RegExp(text, 'i'); } catch (e) {
      re = new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'i');
    }
    const names = g.d.names;
    matchFn = new Uint8Array(names.length);
    for (let f = 0; f < names.length; f++) if (re.test(names[f])) matchFn[f] = 1;
  }

  // matchedTotal sums the matching frames under the zoomed node, each
  // sample once (a match inside a match is not counted again).
  function matchedTotal() {
    let sum = 0;
    for (let i = zoom; i < g.end[zoom];) {
      if (matchFn[g.fn[i]]) { sum += g.total[i]; i = g.end[i]; } else i++;
    }
    return sum;
  }

  // ---- drawing ----

  const esc = (s) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

  function render() {
    const t0 = performance.now();
    if (!g || g.n === 0 || g.total[0] === 0) {
      ui.svg.replaceChildren();
      ui.svg.setAttribute('height', 0);
      ui.status.textContent = 'No samples in this view yet.';
      ui.match.hidden = true;
      return;
    }
    const W = Math.max(ui.chart.clientWidth, 100);
    const x0 = g.x[zoom], scale = W / g.total[zoom];
    const drawn = [];
    let maxDepth = g.depth[zoom];
    for (let a = g.parent[zoom]; a >= 0; a = g.parent[a]) drawn.push(a);
    for (let i = zoom; i < g.end[zoom];) {
      const w = g.total[i] * scale;
      if (w < MIN_PX) { i = g.end[i]; continue; }
      drawn.push(i);
      if (g.depth[i] > maxDepth) maxDepth = g.depth[i];
      i++;
    }
    const icicle = ui.icicle.checked;
    const height = (maxDepth + 1) * ROW;
    const parts = [];
    for (const i of drawn) {
      const anc = i < zoom; // ancestors come before a node, depth first
      const left = anc ? 0 : (g.x[i] - x0) * scale;
      const w = anc ? W : g.total[i] * scale;
      const y = icicle ? g.depth[i] * ROW : height - (g.depth[i] + 1) * ROW;
      const name = g.d.names[g.fn[i]];
      let cls = 'k-' + g.kind[g.fn[i]];
      if (anc) cls += ' anc';
      if (matchFn && matchFn[g.fn[i]]) cls += ' match';
      let label = '';
      const fit = Math.floor((w - 6) / CHAR_PX);
      if (fit >= 3) {
        const text = name.length <= fit ? name : name.slice(0, fit - 1) + '\u2026';
        label = '<text x="' + (left + 3).toFixed(1) + '" y="' + (y + ROW / 2) + '">' + esc(text) + '</text>';
      }
      parts.push('<g class="' + cls + '" data-i="' + i + '" role="listitem" aria-label="' + esc(name) + '"><rect x="' +
        left.toFixed(1) + '" y="' + y + '" width="' + w.toFixed(1) + '" height="' + ROW + '"/>' + label + '</g>');
    }
    ui.svg.setAttribute('height', height);
    ui.svg.setAttribute('viewBox', '0 0 ' + W + ' ' + height);
    ui.svg.innerHTML = parts.join('');
    ui.svg.getBBox(); // lay out now, so that the time below includes it
    const ms = performance.now() - t0;
    document.body.dataset.renderMs = ms.toFixed(1);
    document.body.dataset.frames = drawn.length;
    document.body.dataset.version = lastVersion;
    document.body.dataset.intervals = g.d.intervals;

    const d = g.d;
    const range = d.start ? new Date(d.start).toLocaleTimeString() + '–' + new Date(d.end).toLocaleTimeString() : '';
    let status = fmtAmount(g.total[0], d) + ' in ' + d.stacks.toLocaleString() + ' stacks, ' +
      d.intervals + (d.intervals === 1 ? ' interval ' : ' intervals ') + range;
    if (d.dropped > 0) status += ' · ' + fmtValue(d.dropped, d.unit) + ' left out (over --http-max-stacks)';
    ui.status.textContent = status;
    if (matchFn) {
      const m = matchedTotal();
      ui.match.hidden = false;
      ui.match.textContent = 'Matched: ' + fmtValue(m, d.unit) + ', ' + pct(m, g.total[zoom]) + ' of the view';
    } else {
      ui.match.hidden = true;
    }
    ui.reset.disabled = zoom === 0;
    const p = viewParams();
    for (const name of pathOf(zoom)) p.append('focus', name);
    ui.download.href = 'api/flamegraph.pb.gz?' + p;
  }

  // fmtValue formats a value of the view's unit for people: samples
  // counted, or time (off-CPU nanoseconds) in ns, µs, ms, s or min.
  function fmtValue(v, unit) {
    if (unit === 'nanoseconds') {
      const a = Math.abs(v);
      if (a >= 60e9) return (v / 60e9).toFixed(1) + ' min';
      if (a >= 1e9) return (v / 1e9).toFixed(2) + ' s';
      if (a >= 1e6) return (v / 1e6).toFixed(1) + ' ms';
      if (a >= 1e3) return (v / 1e3).toFixed(1) + ' µs';
      return v + ' ns';
    }
    return v.toLocaleString() + (unit === 'count' || !unit ? ' samples' : ' ' + unit);
  }

  // fmtAmount is fmtValue with what the amount is: time waited for an
  // off-CPU view.
  function fmtAmount(v, d) {
    return fmtValue(v, d.unit) + (d.type === 'off_cpu' ? ' waited' : '');
  }

  const pct = (a, b) => (b > 0 ? (100 * a / b).toFixed(2) : '0') + '%';

  // ---- interaction ----

  function nodeAt(ev) {
    const el = ev.target.closest && ev.target.closest('g[data-i]');
    return el ? Number(el.dataset.i) : -1;
  }

  ui.svg.addEventListener('click', (ev) => {
    const i = nodeAt(ev);
    if (i < 0) return;
    zoom = i;
    zoomPath = pathOf(i);
    render();
  });

  ui.svg.addEventListener('mousemove', (ev) => {
    const i = nodeAt(ev);
    if (i < 0 || !g) { ui.tooltip.hidden = true; return; }
    const d = g.d, f = g.fn[i];
    const file = d.files[f] ? d.files[f] + (g.line[i] > 0 ? ':' + g.line[i] : '') : '';
    ui.tooltip.replaceChildren();
    const b = document.createElement('b');
    b.textContent = d.names[f];
    ui.tooltip.append(b);
    const lines = [];
    if (file) lines.push(file);
    lines.push(KIND_NAMES[g.kind[f]] || g.kind[f]);
    lines.push(fmtAmount(g.total[i], d) + ' (' + pct(g.total[i], g.total[0]) + ' of all' +
      (zoom ? ', ' + pct(g.total[i], g.total[zoom]) + ' of the zoomed frame' : '') + ')');
    if (g.self[i] > 0) lines.push('self: ' + fmtValue(g.self[i], d.unit));
    for (const l of lines) {
      const div = document.createElement('div');
      div.textContent = l;
      ui.tooltip.append(div);
    }
    ui.tooltip.hidden = false;
    const tw = ui.tooltip.offsetWidth, th = ui.tooltip.offsetHeight;
    let left = ev.clientX + 12, top = ev.clientY + 12;
    if (left + tw > window.innerWidth) left = Math.max(0, ev.clientX - tw - 12);
    if (top + th > window.innerHeight) top = Math.max(0, ev.clientY - th - 12);
    ui.tooltip.style.left = left + 'px';
    ui.tooltip.style.top = top + 'px';
  });
  ui.svg.addEventListener('mouseleave', () => { ui.tooltip.hidden = true; });

  ui.reset.addEventListener('click', () => { zoom = 0; zoomPath = []; render(); });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && zoom !== 0) { zoom = 0; zoomPath = []; render(); }
  });
  let searchTimer = 0;
  ui.search.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { computeMatches(); render(); }, 120);
  });
  $('controls').addEventListener('submit', (ev) => ev.preventDefault());
  ui.icicle.addEventListener('change', render);
  ui.process.addEventListener('change', () => { ui.thread.value = ''; });
  for (const el of [ui.window, ui.type, ui.process, ui.thread]) el.addEventListener('change', load);
  let resizeFrame = 0;
  window.addEventListener('resize', () => {
    cancelAnimationFrame(resizeFrame);
    resizeFrame = requestAnimationFrame(render);
  });

  // ---- live updates ----

  function follow() {
    const es = new EventSource('api/events');
    es.addEventListener('interval', (ev) => {
      if (ui.live.checked) announce(Number(ev.data));
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) setTimeout(follow, 5000);
    };
  }
  ui.live.addEventListener('change', () => { if (ui.live.checked) load(); });

  load();
  follow();
})();
