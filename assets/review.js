/* The review grid: pages of image ids, ticked off in the browser, confirmed into a group.
 *
 * The server sends the list (`review-view`: ids in order, the group's marks among them) and
 * saves a page when it is confirmed (`review-confirm` -> `review-saved`). Everything else
 * happens here, with no round trip: a tick, a Shift-click range, a page, invert, clear,
 * undo, the keyboard, the preview, the tile size. Ticks not yet confirmed are kept in
 * localStorage per run and group, so a reload or a second tab keeps them.
 *
 * A mark is 1 (in), 0 (out) or absent (not reviewed). `saved` holds the server's marks,
 * `drafts` the person's unconfirmed ones; a tile shows its draft where it has one.
 */
(function () {
  const GAP = 6;  // px between tiles, as in style.css
  const BUFFER_ROWS = 2;  // rows drawn above and below the visible ones
  const LONG_HOVER_MS = 600;  // a hover this long opens the preview
  const UNDO_LIMIT = 200;

  const S = {
    view: null, key: null, version: '', group: '', page: 0, cursor: 0, anchor: null,
    saved: new Map(), drafts: {}, undo: [], tiles: new Map(), nonce: 0, pending: new Map(),
    preview: null, hoverTimer: null, bound: false, awaiting: null, confirmMs: [], storeFrame: null, storeTimer: null, unstored: new Set(),
  };

  const $ = (id) => document.getElementById(id);
  const setProps = (id, props) => window.dash_clientside.set_props(id, props);
  const readOnly = () => !!document.querySelector('.app.read-only');
  // the grid's settings live here, not in their controls: the Images tab's content is built
  // again each time the tab is shown, with the layout's values
  const SETTINGS = 'ice-grid-settings';
  const settings = (() => { try { return JSON.parse(localStorage.getItem(SETTINGS)) || {}; } catch (e) { return {}; } })();
  S.tile = Number(settings.tile) || 96;
  S.pageSize = settings.pageSize || '48';
  const tileSize = () => S.tile;
  const pageSize = () => (S.pageSize === 'all' ? Infinity : Number(S.pageSize));
  function keepSettings() {
    try { localStorage.setItem(SETTINGS, JSON.stringify({tile: S.tile, pageSize: S.pageSize})); } catch (e) { /* kept for this page */ }
  }
  function syncControls() {
    const tile = $('tile-size'), page = $('page-size');
    if (tile && Number(tile.value) !== S.tile) tile.value = S.tile;
    if (page && page.value !== S.pageSize) page.value = S.pageSize;
  }
  const ids = () => (S.view ? S.view.ids : []);
  const pageCount = () => Math.max(1, Math.ceil(ids().length / Math.min(pageSize(), Math.max(ids().length, 1))));
  const pageIds = () => {
    const size = pageSize();
    return size === Infinity ? ids() : ids().slice(S.page * size, (S.page + 1) * size);
  };
  const mark = (id) => (id in S.drafts ? S.drafts[id] : S.saved.get(id));
  const ticked = (id) => mark(id) === 0;
  const storageKey = (group) => `ice-marks:${S.version}:${group}`;

  function loadDrafts(group) {
    try { return JSON.parse(localStorage.getItem(storageKey(group)) || '{}'); } catch (e) { return {}; }
  }
  function storeDrafts() {
    if (S.storeFrame !== null) { cancelAnimationFrame(S.storeFrame); S.storeFrame = null; }
    if (S.storeTimer !== null) { clearTimeout(S.storeTimer); S.storeTimer = null; }
    S.unstored.clear();
    try {
      if (Object.keys(S.drafts).length) localStorage.setItem(storageKey(S.group), JSON.stringify(S.drafts));
      else localStorage.removeItem(storageKey(S.group));
    } catch (e) { status('Could not keep the ticks in this browser (' + e.name + '); confirm them soon.'); }
    setProps('excluded', {data: Object.keys(S.drafts).filter((id) => S.drafts[id] === 0).map(Number)});
  }
  /* A tick is drawn first and stored after that frame is painted (in a batch, where several
     come in one frame): storing and telling the app cost the frame most of its time. A tab
     that is hidden stores at once, since a hidden tab draws no frame. */
  const storing = () => S.storeFrame !== null || S.storeTimer !== null;
  function storeSoon() {
    if (document.hidden) { storeDrafts(); return; }
    if (storing()) return;
    S.storeFrame = requestAnimationFrame(() => {
      S.storeFrame = null;
      S.storeTimer = setTimeout(storeDrafts, 0);
    });
  }
  function status(text) { const el = $('review-status'); if (el) el.textContent = text; }
  function unconfirmed() { return Object.keys(S.drafts).length; }

  /* --- drawing ---------------------------------------------------------------------- */

  function columns(grid) { return Math.max(1, Math.floor((grid.clientWidth + GAP) / (tileSize() + GAP))); }

  function tileClass(id, index) {
    const m = mark(id), saved = S.saved.get(id);
    let c = 'tile';
    if (m === 0) c += ' excluded';
    if (saved === 1 && m !== 0) c += ' saved-in';
    if (id in S.drafts && S.drafts[id] !== saved) c += ' unsaved';
    if (index === S.cursor) c += ' cursor';
    return c;
  }

  function makeTile(id) {
    const tile = document.createElement('div');
    tile.dataset.id = id;
    const img = document.createElement('img');
    img.className = 'thumb';
    img.loading = 'lazy';
    img.alt = `image ${id}`;
    img.src = `/thumb/${id}.png?v=${S.version}`;
    const markEl = document.createElement('span');
    markEl.className = 'tile-mark';
    markEl.textContent = '✕';
    const info = document.createElement('button');
    info.className = 'tile-info';
    info.title = 'details and nearest neighbours';
    info.textContent = 'i';
    tile.append(img, markEl, info);
    return tile;
  }

  /* Draws the tiles of the page that are in view (all of them for a page of up to a few
     hundred; a whole cluster's rows only as they scroll in). */
  function draw() {
    const grid = $('grid');
    if (!grid) return;
    let inner = grid.querySelector('.grid-inner');
    if (!inner) { inner = document.createElement('div'); inner.className = 'grid-inner'; grid.append(inner); }
    syncControls();
    grid.classList.toggle('awaiting', !!S.awaiting);  // a grid built again keeps the state
    const page = pageIds(), size = tileSize(), cols = columns(grid), row = size + GAP;
    inner.style.height = `${Math.ceil(page.length / cols) * row}px`;
    const first = Math.max(0, Math.floor(grid.scrollTop / row) - BUFFER_ROWS);
    const last = Math.ceil((grid.scrollTop + grid.clientHeight) / row) + BUFFER_ROWS;
    const keep = new Set();
    for (let i = first * cols; i < Math.min(page.length, last * cols); i++) {
      const id = page[i];
      keep.add(id);
      let tile = S.tiles.get(id);
      if (!tile) { tile = makeTile(id); S.tiles.set(id, tile); }
      if (tile.parentNode !== inner) inner.append(tile);  // new, or left in a grid built before
      tile.className = tileClass(id, i);
      tile.dataset.index = i;
      tile.style.cssText = `width:${size}px;height:${size}px;top:${Math.floor(i / cols) * row}px;left:${(i % cols) * (size + GAP)}px`;
    }
    for (const [id, tile] of S.tiles) { if (!keep.has(id)) { tile.remove(); S.tiles.delete(id); } }
    drawPager();
  }

  function redrawTile(id) {
    const tile = S.tiles.get(id);
    if (tile) tile.className = tileClass(id, Number(tile.dataset.index));
  }

  function drawPager() {
    const pages = pageCount(), info = $('page-info');
    const ticks = pageIds().filter(ticked).length, open = unconfirmed();
    if (info) {
      info.textContent = ids().length ? `Page ${S.page + 1} of ${pages} · ${ticks} ticked off` +
        (open ? ` · ${open} not confirmed` : '') : '';
    }
    const prev = $('page-prev'), next = $('page-next');
    if (prev) prev.disabled = S.page <= 0;
    if (next) next.disabled = S.page >= pages - 1;
  }

  function turnTo(page) {
    const last = pageCount() - 1;
    const to = Math.min(Math.max(page, 0), last);
    if (to === S.page) return;
    S.page = to; S.cursor = 0; S.anchor = null;
    const grid = $('grid'); if (grid) grid.scrollTop = 0;
    draw();
  }

  /* --- marking ---------------------------------------------------------------------- */

  /* Ticks (value true) or unticks images, as one undoable action. Unticking an image the
     group has out makes a draft in; unticking a draft tick forgets it. */
  function setTicks(list, value, label) {
    const before = {};
    for (const id of list) {
      before[id] = id in S.drafts ? S.drafts[id] : null;
      if (value) S.drafts[id] = 0;
      else if (S.saved.get(id) === 0) S.drafts[id] = 1;
      else delete S.drafts[id];
      if (S.drafts[id] === S.saved.get(id)) delete S.drafts[id];
    }
    pushUndo({type: 'ticks', group: S.group, before, label});
    for (const id of list) { redrawTile(id); S.unstored.add(id); }
    drawPager();
    storeSoon();
  }

  function tick(id, shift) {
    const page = pageIds(), at = page.indexOf(id);
    const value = !ticked(id);
    if (shift && S.anchor !== null && page.indexOf(S.anchor) >= 0) {
      const from = page.indexOf(S.anchor);
      setTicks(page.slice(Math.min(from, at), Math.max(from, at) + 1), value, 'range');
    } else {
      setTicks([id], value, 'tick');
    }
    S.anchor = id;
    moveCursor(at);
  }

  function visiblePage() {
    /* a page action on the whole list ("all") means the rows in view */
    if (pageSize() !== Infinity) return pageIds();
    const grid = $('grid'), cols = columns(grid), row = tileSize() + GAP;
    const first = Math.ceil(grid.scrollTop / row), last = Math.floor((grid.scrollTop + grid.clientHeight) / row);
    return ids().slice(first * cols, Math.max(first + 1, last) * cols);
  }
  function tickPage() { const page = visiblePage(); setTicks(page, !page.every(ticked), 'page'); }
  function invertPage() {
    const page = visiblePage(), on = page.filter((id) => !ticked(id)), off = page.filter(ticked);
    setTicks(on, true, 'invert');
    const inverted = S.undo.pop();
    setTicks(off, false, 'invert');
    Object.assign(S.undo[S.undo.length - 1].before, inverted.before);
  }
  function clearPage() {
    const page = visiblePage().filter((id) => id in S.drafts);
    if (!page.length) return;
    const before = {};
    for (const id of page) { before[id] = S.drafts[id]; delete S.drafts[id]; redrawTile(id); }
    pushUndo({type: 'ticks', group: S.group, before, label: 'clear'});
    storeDrafts(); drawPager();
  }

  function confirmPage() {
    if (readOnly()) { status('Read-only: nothing can be saved here.'); return; }
    const group = currentGroup();
    if (group !== S.group) switchGroup(group);
    if (!group) {
      status('Type a group name first: the page is confirmed into that group.');
      const input = $('group-name'); if (input) input.focus();
      return;
    }
    const page = visiblePage();
    if (!page.length) return;
    const marked_in = page.filter((id) => !ticked(id)), marked_out = page.filter(ticked);
    const nonce = `${Date.now()}-${++S.nonce}`;
    const entry = {type: 'confirm', group, page: S.page, nonce, change: null, drafts: {}, saved: {}, values: {}};
    for (const id of page) {
      entry.drafts[id] = id in S.drafts ? S.drafts[id] : null;
      entry.saved[id] = S.saved.has(id) ? S.saved.get(id) : null;
      entry.values[id] = ticked(id) ? 0 : 1;
      S.saved.set(id, entry.values[id]);
      delete S.drafts[id];
    }
    pushUndo(entry);
    S.pending.set(nonce, {entry, started: performance.now()});
    setProps('review-confirm', {data: {group, in: marked_in, out: marked_out, nonce}});
    storeDrafts();
    status(`Saving ${marked_in.length} in and ${marked_out.length} out…`);
    if (S.view.shown && S.view.shown !== 'all') {
      // the list is filtered by the marks: the page leaves it, and what comes next is the
      // list the server sends back (ranked again by these marks), not this list's next page
      awaitList(true);
      status(`Saving ${marked_in.length} in and ${marked_out.length} out, then the rest of the list…`);
    } else if (pageSize() === Infinity) {
      const grid = $('grid'); grid.scrollTop += Math.max(tileSize(), grid.clientHeight - tileSize());
      draw();
    } else if (S.page < pageCount() - 1) {
      turnTo(S.page + 1);
    } else {
      draw();
    }
  }

  /* While a filtered list is sent again after a confirm, its old page is dimmed and takes no
     marks: a mark made there would land on a page about to be replaced. */
  function awaitList(on) {
    S.awaiting = on ? {key: S.key, page: S.page} : null;
    const grid = $('grid');
    if (grid) grid.classList.toggle('awaiting', !!on);
  }

  function pushUndo(entry) { S.undo.push(entry); if (S.undo.length > UNDO_LIMIT) S.undo.shift(); }

  function undo() {
    const entry = S.undo.pop();
    if (!entry) { status('Nothing to undo.'); return; }
    if (entry.group !== S.group) { status(`The last action was in group '${entry.group}'; switch back to undo it.`); S.undo.push(entry); return; }
    if (entry.type === 'ticks') {
      for (const [id, value] of Object.entries(entry.before)) {
        if (value === null) delete S.drafts[id]; else S.drafts[id] = value;
      }
      storeDrafts();
      status(`Undone: ${entry.label}.`);
      draw();
      return;
    }
    for (const [id, value] of Object.entries(entry.drafts)) { if (value === null) delete S.drafts[id]; else S.drafts[id] = value; }
    for (const [id, value] of Object.entries(entry.saved)) { if (value === null) S.saved.delete(Number(id)); else S.saved.set(Number(id), value); }
    storeDrafts();
    if (entry.change === null) entry.undoRequested = true;  // sent once the server has answered
    else setProps('review-undo', {data: {group: entry.group, change: entry.change}});
    status('Undoing the confirmed page…');
    S.page = -1; turnTo(entry.page);
    draw();
  }

  function currentGroup() { const input = $('group-name'); return ((input && input.value) || '').trim(); }

  /* The group box changed: its ticks are another group's. Ticks made before any name was
     typed go with the first name. */
  function switchGroup(group) {
    if (group === S.group) return;
    storeDraftsQuietly();
    const carried = S.group === '' ? S.drafts : {};
    if (S.group === '') { try { localStorage.removeItem(storageKey('')); } catch (e) { /* kept */ } }
    S.group = group;
    S.drafts = Object.assign(loadDrafts(group), carried);
    S.undo = S.undo.filter((e) => e.type === 'confirm');
    storeDrafts();
    draw();
  }
  function storeDraftsQuietly() {
    try {
      if (Object.keys(S.drafts).length) localStorage.setItem(storageKey(S.group), JSON.stringify(S.drafts));
      else localStorage.removeItem(storageKey(S.group));
    } catch (e) { /* reported on the next tick */ }
  }

  /* --- cursor, preview, help ---------------------------------------------------------- */

  function moveCursor(index) {
    const page = pageIds();
    if (!page.length) return;
    const before = S.cursor;
    S.cursor = Math.min(Math.max(index, 0), page.length - 1);
    if (before !== S.cursor && page[before] !== undefined) redrawTile(page[before]);
    const grid = $('grid'), cols = columns(grid), row = tileSize() + GAP, top = Math.floor(S.cursor / cols) * row;
    const scrollTop = grid.scrollTop;
    if (top < scrollTop) grid.scrollTop = top;
    else if (top + row > scrollTop + grid.clientHeight) grid.scrollTop = top + row - grid.clientHeight;
    // in view already: only the two tiles change (drawing the page again cost a tick its frame)
    if (grid.scrollTop !== scrollTop || !S.tiles.has(page[S.cursor])) draw();
    else redrawTile(page[S.cursor]);
    if (S.preview !== null) openPreview(page[S.cursor], S.preview.by);
  }

  function openPreview(id, by) {
    const box = $('preview');
    if (!box) return;
    S.preview = {id, by};
    box.querySelector('img').src = `/image/${id}?v=${S.version}`;
    box.querySelector('.preview-caption').textContent = `image ${id}` + (ticked(id) ? ' · ticked off' : '');
    box.classList.add('open');
  }
  function closePreview() { const box = $('preview'); if (box) box.classList.remove('open'); S.preview = null; }

  function toggleHelp(show) {
    const help = $('shortcuts');
    if (help) help.classList.toggle('open', show === undefined ? !help.classList.contains('open') : show);
  }

  /* --- events ----------------------------------------------------------------------- */

  function typing(e) {
    const t = e.target;
    return t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable);
  }

  function onKey(e) {
    if (e.target && e.target.id === 'group-name' && e.key === 'Enter') { e.target.blur(); return; }
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === 'm' || e.key === 'M') { e.preventDefault(); setProps('more-like-key', {data: Date.now()}); return; }
    if (!S.view || !document.getElementById('grid')) return;
    if (!$('grid').offsetParent) return;  // the Images tab is not shown
    const cols = columns($('grid')), page = pageIds(), k = e.key;
    if (S.awaiting && !['z', '?', 'Escape'].includes(k)) return;
    const keys = {
      ArrowRight: () => moveCursor(S.cursor + 1), ArrowLeft: () => moveCursor(S.cursor - 1),
      ArrowDown: () => moveCursor(S.cursor + cols), ArrowUp: () => moveCursor(S.cursor - cols),
      ' ': () => (S.preview && S.preview.by === 'key' ? closePreview() : page.length && openPreview(page[S.cursor], 'key')),
      x: () => page.length && tick(page[S.cursor], e.shiftKey), X: () => page.length && tick(page[S.cursor], true),
      a: tickPage, i: invertPage, c: clearPage, Enter: confirmPage, z: undo,
      n: () => turnTo(S.page + 1), PageDown: () => turnTo(S.page + 1),
      p: () => turnTo(S.page - 1), PageUp: () => turnTo(S.page - 1),
      '?': () => toggleHelp(), Escape: () => { closePreview(); toggleHelp(false); },
    };
    if (keys[k]) { e.preventDefault(); keys[k](); }
  }

  function onClick(e) {
    const button = e.target.closest('button, .tile');
    if (!button) return;
    const id = button.id;
    const actions = {'tick-page': tickPage, 'invert-page': invertPage, 'clear-page': clearPage,
                     'confirm-page': confirmPage, 'undo': undo, 'page-prev': () => turnTo(S.page - 1),
                     'page-next': () => turnTo(S.page + 1), 'show-shortcuts': () => toggleHelp(),
                     'wide-grid': () => { document.querySelector('.app').classList.toggle('wide'); draw(); }};
    if (actions[id]) { actions[id](); return; }
    const tile = e.target.closest('#grid .tile');
    if (!tile || S.awaiting) return;
    const imageId = Number(tile.dataset.id);
    if (e.target.closest('.tile-info')) { setProps('focus', {data: imageId}); return; }
    e.preventDefault();
    tick(imageId, e.shiftKey);
  }

  function bind() {
    if (S.bound) return;
    S.bound = true;
    document.addEventListener('keydown', onKey);
    document.addEventListener('click', onClick);
    document.addEventListener('mousedown', (e) => { if (e.shiftKey && e.target.closest('#grid')) e.preventDefault(); });
    document.addEventListener('input', (e) => {
      if (e.target.id === 'tile-size') { S.tile = Number(e.target.value) || 96; keepSettings(); draw(); }
    });
    document.addEventListener('change', (e) => {
      if (e.target.id === 'page-size') {
        S.pageSize = e.target.value; S.page = 0; keepSettings(); draw();
        setProps('grid-page-size', {data: S.pageSize});  // the size of a teach page too
      }
    });
    document.addEventListener('mouseover', (e) => {
      const tile = e.target.closest && e.target.closest('#grid .tile');
      clearTimeout(S.hoverTimer);
      const hovered = S.preview && S.preview.by === 'hover';
      if (tile && hovered) openPreview(Number(tile.dataset.id), 'hover');  // already open: follows the mouse
      else if (tile) S.hoverTimer = setTimeout(() => openPreview(Number(tile.dataset.id), 'hover'), LONG_HOVER_MS);
      else if (hovered && !(e.target.closest && e.target.closest('#grid'))) closePreview();
    });
    document.addEventListener('scroll', (e) => { if (e.target.id === 'grid') requestAnimationFrame(draw); }, true);
    window.addEventListener('resize', () => requestAnimationFrame(draw));
    window.addEventListener('beforeunload', (e) => {
      if (storing()) storeDrafts();  // ticks not stored yet
      if (unconfirmed()) { e.preventDefault(); e.returnValue = ''; }
    });
    window.addEventListener('storage', (e) => {  // another tab ticked in the same group
      if (e.key !== storageKey(S.group)) return;
      const theirs = loadDrafts(S.group), mine = S.unstored.size;
      for (const id of S.unstored) { if (id in S.drafts) theirs[id] = S.drafts[id]; else delete theirs[id]; }
      S.drafts = theirs;
      if (mine) storeDrafts();  // this tab's ticks not stored yet, on top of theirs
      draw();
    });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'hidden' && storing()) storeDrafts();  // no frame comes while hidden
      // another tab may have confirmed marks
      if (document.visibilityState === 'visible' && S.view) setProps('review-refresh', {data: Date.now()});
    });
  }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    review: {
      /* review-view.data (and the selection, whose ids it leaves out when in their own order)
         -> draws the grid; a new key (list, order or filter) starts at page 1 */
      show: function (view, selection) {
        bind();
        const grid = $('grid');
        if (!view || !grid) return window.dash_clientside.no_update;
        S.version = grid.dataset.version || '';
        const fresh = view.key !== S.key;
        S.view = Object.assign({}, view, {ids: view.ids || (selection && selection.ids) || []});
        S.key = view.key;
        S.saved = new Map();
        for (const id of view.in) S.saved.set(id, 1);
        for (const id of view.out) S.saved.set(id, 0);
        for (const p of S.pending.values()) {  // pages confirmed whose answer has not come back yet
          for (const [id, value] of Object.entries(p.entry.values)) S.saved.set(Number(id), value);
        }
        const group = view.group || '';
        if (group !== S.group) switchGroup(group);
        if (fresh) { S.page = 0; S.cursor = 0; S.anchor = null; grid.scrollTop = 0; }
        if (S.awaiting && !S.pending.size) {  // the list after the confirm; the same list: its next page
          if (!fresh) S.page = S.awaiting.page + 1;
          awaitList(false);
        }
        S.page = Math.min(S.page, pageCount() - 1);
        draw();
        return window.dash_clientside.no_update;
      },
      /* tabs.value: the Images tab's content was built again; draw the grid into it */
      redraw: function (tab) {
        if (tab === 'images' && S.view) requestAnimationFrame(draw);
        return window.dash_clientside.no_update;
      },
      /* review-saved.data: the server's answer to a confirm or an undo */
      saved: function (ack) {
        if (!ack) return window.dash_clientside.no_update;
        const p = S.pending.get(ack.nonce);
        if (p) {
          S.pending.delete(ack.nonce);
          p.entry.change = ack.change;
          S.confirmMs.push(performance.now() - p.started);
          if (p.entry.undoRequested && !ack.error) setProps('review-undo', {data: {group: p.entry.group, change: ack.change}});
          if (ack.error) {  // put the page back as it was: nothing was saved
            for (const [id, value] of Object.entries(p.entry.saved)) { if (value === null) S.saved.delete(Number(id)); else S.saved.set(Number(id), value); }
            for (const [id, value] of Object.entries(p.entry.drafts)) { if (value !== null) S.drafts[id] = value; }
            S.undo = S.undo.filter((e) => e !== p.entry);
            awaitList(false);
            storeDrafts(); draw();
          }
        }
        if (S.awaiting && !S.pending.size && S.key !== S.awaiting.key) { awaitList(false); draw(); }  // the list came first
        status(ack.status);
        drawPager();
        return window.dash_clientside.no_update;
      },
    },
  });

  // for the benchmark and the tests: the grid's state, read-only
  window.iceReview = {state: () => ({key: S.key, page: S.page, pages: pageCount(), cursor: S.cursor, group: S.group,
                                     ids: pageIds(), ticked: pageIds().filter(ticked), drafts: Object.assign({}, S.drafts),
                                     pending: S.pending.size, awaiting: !!S.awaiting, undo: S.undo.length, confirmMs: S.confirmMs.slice()})};
})();
