# varnish: Varnish 7 between haproxy's frontend and its app pool listener on the
# lb host (salt/varnish/files/default.vcl.jinja): anonymous pages cached (their
# cookies dropped), logged-in visitors and their paths passed to the app, stale
# pages served for hours while the app hosts are down, the site's own error page
# when there is nothing to serve, redirects and PURGE from pillar.
include:
  - .package
  - .config
  - .service
