// The API browser at /docs: Swagger UI (served from asset/vendor/, never a CDN) over this
// server's own OpenAPI document. A file rather than an inline script, so the page's CSP can
// forbid inline scripts.
(function () {
  'use strict';
  var root = document.getElementById('openapi');
  window.ui = window.SwaggerUIBundle({
    url: root.getAttribute('data-spec'),
    dom_id: '#openapi',
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIStandalonePreset],
    layout: 'StandaloneLayout',
    validatorUrl: null
  });
})();
