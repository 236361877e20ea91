/* The map's callbacks that run in the browser, registered by explorer/callbacks/map.py. */
(function () {
  /* The hover thumbnail's [side, style] for point p. Only the browser knows the map's size and
     the box's: the box opens on the side that has room and needs it moved least, and is moved
     along that side to stay whole inside the map (the pane cuts it off). Its arrow stays on the
     point: the box is moved by its own transform, not by the place it points at. */
  function place(p, map) {
    const tip = document.getElementById('map-tooltip'), gap = 14, w = map.clientWidth, h = map.clientHeight;
    const W = Math.max((tip && tip.offsetWidth) || 0, 120), H = Math.max((tip && tip.offsetHeight) || 0, 140);
    const x = (p.bbox.x0 + p.bbox.x1) / 2, y = (p.bbox.y0 + p.bbox.y1) / 2;
    const clamp = (v, lo, hi) => Math.max(lo, Math.min(v, Math.max(lo, hi)));
    const dy = clamp(y, H / 2, h - H / 2) - y, dx = clamp(x, W / 2, w - W / 2) - x;
    const sides = [  // [side, fits, how far the box moves], the side facing the map's middle first
      ...(x <= w / 2 ? [['right', x + gap + W <= w, dy], ['left', x - gap - W >= 0, dy]]
                     : [['left', x - gap - W >= 0, dy], ['right', x + gap + W <= w, dy]]),
      ['bottom', y + gap + H <= h, dx], ['top', y - gap - H >= 0, dx]];
    const fit = sides.filter(s => s[1]);
    const [side, , move] = (fit.length ? fit : sides).reduce((a, b) => (Math.abs(b[2]) < Math.abs(a[2]) ? b : a));
    const base = {right: ['0px', '-50%'], left: ['-100%', '-50%'], bottom: ['-50%', '0px'], top: ['-50%', '-100%']}[side];
    const across = side === 'right' || side === 'left';
    const tx = across ? base[0] : `calc(${base[0]} + ${move}px)`, ty = across ? `calc(${base[1]} + ${move}px)` : base[1];
    return [side, {transform: `translate(${tx}, ${ty})`}];
  }

  const hovered = (hover) => hover && hover.points && hover.points[0];

  /* Pictures of the view from the server, laid on the map: the density image of a large run
     (explorer/density.py) under the points, and the image atlas (explorer/atlas.py) over them,
     under the legend and the lasso. The map reports its view (ranges, size in pixels, hidden
     clusters, rings) after each draw; the server answers with a picture of that view, which
     follows pans and zooms until the next one comes. They take no mouse events: hover,
     clicks and the lasso reach the points. */
  // detailSeq: the densitySeq whose points are drawn; benchmarks/explorer_bench.py reads it
  const A = {atlas: null, density: null, densitySeq: 0, detailSeq: -1, sent: '', timer: null};
  window.iceMap = A;
  const graph = () => document.querySelector('#map .js-plotly-plot');
  const mapKey = (gd) => gd.layout && gd.layout.meta && gd.layout.meta.key;
  // the clusters hidden in the legend: trace c is cluster c
  const hiddenClusters = (gd) => (gd && gd._fullData ? gd._fullData : [])
    .filter((t) => t.meta === 'cluster' && t.visible === 'legendonly').map((t) => t.index);

  function layer(container, id, before) {
    let frame = document.getElementById(id);
    if (!frame || frame.parentNode !== container) {  // plotly may draw its container anew
      if (frame) frame.remove();
      frame = document.createElement('div');
      frame.id = id;
      frame.className = 'atlas-frame';
      frame.appendChild(document.createElement('img'));
      container.insertBefore(frame, before || null);
    }
    return frame;
  }

  function placeLayer(gd, frame, d, show) {
    const fl = gd._fullLayout, img = frame.firstChild, size = fl._size;
    Object.assign(frame.style, {left: size.l + 'px', top: size.t + 'px', width: size.w + 'px', height: size.h + 'px'});
    if (!show || !d || d.key !== mapKey(gd)) { frame.style.display = 'none'; return; }
    const xa = fl.xaxis, ya = fl.yaxis, left = xa.d2p(d.x[0]), top = ya.d2p(d.y[1]);
    if (img.getAttribute('src') !== d.src) img.src = d.src;
    Object.assign(img.style, {
      left: left + 'px', top: top + 'px', width: (xa.d2p(d.x[1]) - left) + 'px', height: (ya.d2p(d.y[0]) - top) + 'px',
    });
    frame.style.display = '';
  }

  function placeAtlas(gd) {
    const fl = gd._fullLayout, container = gd.querySelector('.svg-container');
    if (!fl || !fl.xaxis || !fl.yaxis || !container) return;
    const svgs = container.querySelectorAll('.main-svg');
    const gl = container.querySelector('.gl-container');
    placeLayer(gd, layer(container, 'map-density-frame', gl || svgs[1]), A.density, true);
    const scores = gd._fullData && gd._fullData.find((t) => t.meta === 'scores');
    // the teach loop's scores are dots coloured by score: the pictures would hide them
    placeLayer(gd, layer(container, 'map-atlas-frame', svgs[1]), A.atlas, !(scores && scores._length));
  }

  /* A large map's view: its own points beyond the sample (explorer/density.py detail), drawn
     in traces 'detail', one per cluster in its colour, with their image ids as customdata (a
     plain array: plotly's WebGL hover events carry it only so). Drawn again after a new figure
     of the same map, which comes without them. */
  function decode(b64, Type) {
    const text = atob(b64), bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);  // Uint8Array.from: several times slower
    return new Type(bytes.buffer);
  }

  function drawDetail(gd) {
    if (!gd || !gd._fullData) return;
    const indices = gd._fullData.filter((t) => t.meta === 'detail').map((t) => t.index);
    if (!indices.length) return;
    const d = A.density, p = d && d.key === mapKey(gd) ? d.points : null;
    const tag = p ? A.densitySeq : 0, first = gd.data[indices[0]];
    if (first.__iceTag === tag) return;
    const drawn = () => { gd.data[indices[0]].__iceTag = tag; A.detailSeq = tag; };
    if ((!p || !p.n) && indices.every((i) => !gd.data[i].x || !gd.data[i].x.length)) { drawn(); return; }
    const x = p && p.n ? decode(p.x, Float32Array) : new Float32Array(0);
    const y = p && p.n ? decode(p.y, Float32Array) : new Float32Array(0);
    const id = p && p.n ? decode(p.id, Int32Array) : new Int32Array(0);
    const update = {x: [], y: [], customdata: []};
    let start = 0;
    indices.forEach((_, c) => {
      const end = start + ((p && p.counts && p.counts[c]) || 0);
      update.x.push(x.slice(start, end));
      update.y.push(y.slice(start, end));
      update.customdata.push(Array.from(id.subarray(start, end)));
      start = end;
    });
    window.Plotly.restyle(gd, update, indices).then(drawn);
  }

  function reportView(gd) {
    placeAtlas(gd);
    const fl = gd._fullLayout, key = mapKey(gd);
    if (key === undefined || !fl || !fl.xaxis || !fl.yaxis) return;  // the empty map before the first
    const hidden = hiddenClusters(gd);
    const ring = gd._fullData.find((t) => t.meta === 'highlight');
    const ringed = ring && ring.customdata ? Array.from(ring.customdata).map(Number) : [];
    const view = {key, x: fl.xaxis.range.slice(), y: fl.yaxis.range.slice(),
                  w: Math.round(fl._size.w), h: Math.round(fl._size.h), hidden, ringed};
    const text = JSON.stringify(view);
    if (text === A.sent) return;
    A.sent = text;
    // a zoom by the wheel reports many views: after the first, the last of a burst is asked for
    clearTimeout(A.timer);
    const send = () => { A.lastSent = performance.now(); window.dash_clientside.set_props('map-view', {data: view}); };
    if (performance.now() - (A.lastSent || -1e9) > 250) send();
    else A.timer = setTimeout(send, 60);
  }

  /* dcc.Graph answers a pan or a zoom by copying the map's new ranges from plotly into its
     figure prop, and a new figure prop plots the whole map again (Plotly.react): a second
     full redraw of every point after plotly's own. Copying them into that prop first, as
     dcc.Graph would, leaves it nothing to copy; the figure stays right for later updates. */
  function syncFigure(gd, changed) {
    const api = window.dash_component_api;
    const node = api && api.getLayout ? api.getLayout('map') : null;
    const figure = node && node.props && node.props.figure;
    if (!changed || !figure || !figure.layout || !gd.layout) return;
    for (const name of Object.keys(changed)) {
      const key = name.split('.')[0].split('[')[0];
      if ((key !== 'xaxis' && key !== 'yaxis') || gd.layout[key] === undefined) continue;  // the rest: dcc.Graph
      try { figure.layout[key] = structuredClone(gd.layout[key]); } catch (e) { /* not plain data: dcc.Graph copies it */ }
    }
  }

  /* One unit of the map is as long across as up, whatever the window's shape: a view of
     another shape (the first autorange, a box zoom, a resize) is widened about its middle
     along one axis until it fits. Plotly's scaleanchor does this on a small map; on a larger
     one (explorer/figures.py ANCHORED_MAX) it would compute every trace again on each pan or
     zoom, most of what a pan of a large map cost. True when it changed the view. */
  function keepAspect(gd) {
    const fl = gd._fullLayout, size = fl && fl._size;
    if (!size || !fl.xaxis || !fl.yaxis || !(size.w > 0 && size.h > 0)) return false;
    if (fl.yaxis.scaleanchor) return false;  // plotly keeps it
    const [x0, x1] = fl.xaxis.range, [y0, y1] = fl.yaxis.range;
    const ux = Math.abs(x1 - x0) / size.w, uy = Math.abs(y1 - y0) / size.h;
    if (!(ux > 0 && uy > 0) || Math.abs(ux - uy) <= 1e-6 * Math.max(ux, uy)) return false;
    const u = Math.max(ux, uy);
    const widen = (a, b, px) => {
      const middle = (a + b) / 2, half = (Math.sign(b - a) * u * px) / 2;
      return [middle - half, middle + half];
    };
    const x = ux < uy ? widen(x0, x1, size.w) : [x0, x1], y = uy < ux ? widen(y0, y1, size.h) : [y0, y1];
    window.Plotly.relayout(gd, {'xaxis.range': x, 'yaxis.range': y});
    return true;
  }

  function watch(tries) {
    const gd = graph();
    if (!gd || typeof gd.on !== 'function') {  // the map is not drawn yet
      if (tries > 0) setTimeout(() => watch(tries - 1), 100);
      return;
    }
    if (gd.__iceView) return;
    gd.__iceView = true;
    if (gd._ev && gd._ev.prependListener) {
      gd._ev.prependListener('plotly_relayout', (changed) => { keepAspect(gd); syncFigure(gd, changed); });
    }
    gd.on('plotly_afterplot', () => keepAspect(gd) || reportView(gd));
    gd.on('plotly_relayout', () => reportView(gd));  // a pan or zoom may draw without afterplot
    gd.on('plotly_restyle', () => reportView(gd));  // a cluster hidden or shown in the legend
    gd.on('plotly_relayouting', () => placeAtlas(gd));
    if (!keepAspect(gd)) reportView(gd);
  }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    map: {
      /* map.figure -> map-view, later: the map's listeners report each view it draws. */
      watchView: function (_figure) {
        watch(100);
        const gd = graph();
        if (gd && gd.__iceView) requestAnimationFrame(() => { drawDetail(gd); reportView(gd); });
        return window.dash_clientside.no_update;
      },
      /* map-atlas.data -> the pictures laid over the map; the key of the map they are of. */
      showAtlas: function (atlas) {
        A.atlas = atlas;
        const gd = graph();
        if (gd) placeAtlas(gd);
        return atlas ? atlas.key : null;
      },
      /* map-density.data -> the density image laid under the points; the key of its map. */
      showDensity: function (density) {
        A.density = density;
        A.densitySeq += 1;
        const gd = graph();
        if (gd) { placeAtlas(gd); drawDetail(gd); }
        return density ? density.key : null;
      },
      /* map.id, once as the page starts -> map.config: on a HiDPI screen the map's WebGL draws
         at the screen's pixel ratio. The layout asks for 1: plotly's default, 2, draws four
         times the pixels on an ordinary screen, which a browser without a GPU pays for in every
         frame (BENCHMARKS.md, 2026-12-04). A change of config plots the map again, so a ratio
         of 1 leaves it as it is. */
      pixelRatio: function (_id, config) {
        const ratio = Math.min(4, Math.max(1, window.devicePixelRatio || 1));
        return ratio === config.plotGlPixelRatio ? window.dash_clientside.no_update
                                                 : Object.assign({}, config, {plotGlPixelRatio: ratio});
      },
      /* map.selectedData -> map-points.data: a lasso's or a box's outline in map coordinates,
         with the clusters hidden in the legend, which the server resolves against every image
         of the map (explorer/region.py); plotly's own point numbers only where it gave no
         outline. Nothing (a lasso taken off the map by clear_lasso) leaves the grid. */
      selectedPoints: function (selected) {
        const no = window.dash_clientside.no_update;
        if (!selected) { return no; }
        const hidden = hiddenClusters(graph());
        const lasso = selected.lassoPoints, box = selected.range;
        if (lasso && lasso.x && lasso.x.length >= 3) { return {lasso: {x: lasso.x, y: lasso.y}, hidden}; }
        if (box && box.x && box.y) { return {box: {x: box.x, y: box.y}, hidden}; }
        if (!selected.points || !selected.points.length) { return no; }
        const byCurve = {};
        for (const p of selected.points) {
          (byCurve[p.curveNumber] = byCurve[p.curveNumber] || []).push(p.pointNumber);
        }
        return byCurve;
      },
      /* map.hoverData -> the tooltip's direction, bbox and style, as the mouse arrives, at the
         last box's size: the box moves to the new point at once, before the server's thumbnail
         comes. */
      placeTooltip: function (hover) {
        const p = hovered(hover), map = document.getElementById('map'), no = window.dash_clientside.no_update;
        if (!p || !p.bbox || !map) { return [no, no, no]; }
        const [direction, style] = place(p, map);
        return [direction, p.bbox, style];
      },
      /* map-tooltip.children -> its style again, once the new box is drawn at its own size (a
         long path makes it taller than the last). */
      replaceTooltip: function (_children, hover) {
        const p = hovered(hover), map = document.getElementById('map');
        if (p && p.bbox && map) {
          requestAnimationFrame(() => {
            const [direction, style] = place(p, map);
            window.dash_clientside.set_props('map-tooltip', {direction, style});
          });
        }
        return window.dash_clientside.no_update;
      },
    },
  });
})();
