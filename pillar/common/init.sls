# What the app hosts publish to the Salt mine: where the site runs, its error
# page (salt/site/static.sls, published by salt/site/switch.sls), read by the
# varnish hosts. No addresses: where a host is reached comes from the master's
# inventory or from its name (hpd_edge.app_pool), never from the host.
mine_functions:
  hpd_error_page:
    mine_function: hpd_edge.error_page
