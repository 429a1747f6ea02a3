# What every host publishes to the Salt mine: its addresses (where its name
# resolves: grain fqdn_ip4; a function of Salt's own, so a minion publishes it
# from its first start, before it synced the tree's modules), read by the lb
# hosts for haproxy's pool (hpd_edge.app_pool); and where the site runs, its
# error page (salt/site/static.sls, published by salt/site/switch.sls), read by
# the varnish hosts.
mine_functions:
  hpd_addresses:
    mine_function: grains.get
    key: fqdn_ip4
  hpd_error_page:
    mine_function: hpd_edge.error_page
