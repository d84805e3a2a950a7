// ordobridge console: the only script, served from /console/assets/ (the CSP allows no
// inline script). It refreshes the dashboard from server-sent events; every page works
// without it.
(function () {
  'use strict';
  var live = document.getElementById('live');
  if (live && window.EventSource) {
    var source = new EventSource(live.getAttribute('data-events'));
    source.addEventListener('dashboard', function (event) {
      live.innerHTML = event.data;
      live.setAttribute('data-updated', String(Date.now()));
    });
    source.addEventListener('error', function () {
      live.setAttribute('data-stale', 'true');
    });
  }
  // Buttons that change something ask first (the form still needs its CSRF token).
  document.querySelectorAll('form[data-confirm]').forEach(function (form) {
    form.addEventListener('submit', function (event) {
      if (!window.confirm(form.getAttribute('data-confirm'))) {
        event.preventDefault();
      }
    });
  });
})();
