/* The original viewer: the detail card's image, clicked, at its own size from its file, beside
   the working-size pixels the job kept, drawn as large as the original is shown. */
(function () {
  const $ = (id) => document.getElementById(id);
  const SMALL = 256;  // px: an original smaller than this is magnified
  const isOpen = () => { const v = $('original-view'); return v && v.classList.contains('open'); };
  function close() { const v = $('original-view'); if (v) v.classList.remove('open'); }

  function layout() {
    const original = $('original-img'), working = $('working-img');
    if (!original.naturalWidth) return;
    // its own size; smaller where the window has no room for it, and a tiny one magnified
    // whole times, its pixels kept sharp, to at least SMALL pixels
    const nw = original.naturalWidth, nh = original.naturalHeight, big = Math.max(nw, nh);
    const room = Math.min(1, (window.innerWidth * 0.45) / nw, (window.innerHeight * 0.8) / nh);
    const times = big < SMALL ? Math.floor(SMALL / big) : 1, scale = times > 1 ? times : room;
    const w = Math.round(nw * scale), h = Math.round(nh * scale);
    Object.assign(original.style, {width: w + 'px', height: h + 'px', imageRendering: times > 1 ? 'pixelated' : 'auto'});
    $('original-caption').textContent = `original ${nw}×${nh} px` +
      (times > 1 ? ` (shown ${times}× larger)` : room < 1 ? ` (shown at ${Math.round(room * 100)}%)` : ' (its own size)');
    if (working.naturalWidth) {
      const side = Math.max(h, 64);
      Object.assign(working.style, {width: side + 'px', height: side + 'px'});
      $('working-caption').textContent = `working size ${working.naturalWidth}×${working.naturalHeight} px`;
    }
  }

  function open(img) {
    const view = $('original-view');
    if (!view) return;
    const original = $('original-img'), working = $('working-img');
    $('original-caption').textContent = $('working-caption').textContent = '';
    original.onload = working.onload = layout;
    original.src = img.src;
    working.src = img.dataset.working;
    view.classList.add('open');
    layout();
  }

  document.addEventListener('click', (e) => {
    if (isOpen()) { close(); e.stopPropagation(); return; }
    const img = e.target.closest && e.target.closest('.detail-img');
    if (img) open(img);
  }, true);
  document.addEventListener('keydown', (e) => {
    if (isOpen() && e.key === 'Escape') { close(); e.stopPropagation(); e.preventDefault(); }
  }, true);
  window.addEventListener('resize', () => { if (isOpen()) layout(); });
})();
