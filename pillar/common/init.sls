# Every host publishes its addresses to the Salt mine (where its name resolves:
# grain fqdn_ip4); the lb hosts read the app hosts' to build haproxy's pool
# (hpd_edge.app_pool). A function of Salt's own, so a minion that has not synced
# the tree's modules yet (its first start) publishes it too.
mine_functions:
  hpd_addresses:
    mine_function: grains.get
    key: fqdn_ip4
