/* The detail card's callback that runs in the browser, registered by explorer/callbacks/grid.py. */
(function () {
  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    grid: {
      /* focus.data -> (nothing): the detail card opens at the top of its panel; scroll up to show it */
      showDetail: function (_focus) {
        const body = document.getElementById('detail');
        const panel = body && body.closest('.tab-body');
        if (panel) { panel.scrollTop = 0; }
        return window.dash_clientside.no_update;
      },
    },
  });
})();
