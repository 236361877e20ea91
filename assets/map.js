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

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    map: {
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
      /* map.selectedData -> map-points.data, {curve: [point numbers]}, which the server turns
         into ids: a lasso around 100k points would otherwise send 100k point dicts. No points
         (a lasso taken off the map by clear_lasso, or drawn over nothing) leaves the grid. */
      selectedPoints: function (selected) {
        if (!selected || !selected.points || !selected.points.length) { return window.dash_clientside.no_update; }
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
