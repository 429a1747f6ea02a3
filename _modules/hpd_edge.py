"""
The farm's edge (the lb and varnish roles): haproxy's app pool from the inventory,
and the values Varnish's VCL is written from.

``hpd_edge.app_pool``
    the app hosts haproxy balances over: the environment's app hosts (pillar
    ``hpd:peers:app``, the master's inventory; never a minion's own claim),
    each at the inventory's address for it (``hpd:addresses``), else where its
    name resolves on the lb host; a host with neither keeps its last known
    address.
``hpd_edge.vcl``
    regular expressions, ACL entries and redirects for the VCL template, from
    the varnish role's settings.
``hpd_edge.error_page`` / ``hpd_edge.site_error_page``
    the site's error page (what its ``generate_500_html`` renders into the
    release ``current`` points to): published to the mine by each app host,
    read from it by the varnish hosts.

The computations are plain functions of plain data (the ``_``-prefixed
helpers); the public functions only read pillar, the resolver, the mine (the
error page) and a file.
"""

import ipaddress
import json
import logging
import os
import re
import time

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "hpd_edge"

#: The mine function the app hosts publish (pillar/common/init.sls): the site's
#: error page.
ERROR_PAGE_FUNCTION = "hpd_error_page"
#: The error page's name in a release (salt/site/static.sls renders it).
ERROR_PAGE = "500.html"


def __virtual__():
    return __virtualname__


def _private_address(addresses):
    """The first IPv4 address that is not a loopback one in ``addresses`` (one
    or a list), or None."""
    if isinstance(addresses, str):
        addresses = [addresses]
    if not isinstance(addresses, (list, tuple)):
        return None
    for address in addresses:
        try:
            ip = ipaddress.IPv4Address(str(address))
        except ValueError:
            continue
        if not ip.is_loopback and not ip.is_unspecified:
            return str(ip)
    return None


def _app_pool(peers, found, known):
    """
    Pure computation behind :func:`app_pool`: ``({minion id: address}, [ids
    left out])``. Membership is ``peers`` (the inventory's); each peer's address
    is the one ``found`` for it (the inventory's, else its name's), else the
    last known one; a peer with neither is left out.
    """
    pool, missing = {}, []
    for peer in sorted(set(peers or [])):
        address = _private_address((found or {}).get(peer)) or (known or {}).get(peer)
        if address:
            pool[peer] = address
        else:
            missing.append(peer)
    return pool, missing


def _read_known(path):
    try:
        with open(path, encoding="utf-8") as fh:
            known = json.load(fh)
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _found(peers, listed, role):
    """``{peer: address or None}``: the inventory's address of each peer
    (``listed``, pillar ``hpd:addresses``), else where its name resolves on this
    host, else None. An inventory address that is not an IPv4 address is an
    error naming it."""
    found = {}
    for peer in peers:
        if peer in listed:
            address = _private_address(listed[peer])
            if address is None:
                raise CommandExecutionError(
                    f"inventory {peer}:address: {listed[peer]!r} is not an IPv4 address a host "
                    f"can be reached at")
            found[peer] = address
            continue
        try:
            found[peer] = __salt__["hpd.resolve"]([peer], f"hpd:peers:{role}")[peer]
        except CommandExecutionError as exc:
            log.warning("hpd_edge: %s", exc)
            found[peer] = None
    return found


def app_pool(known_file, role="app"):
    """
    The app pool haproxy balances over, as ``{minion id: address}``.

    Its members are the hosts of ``role`` in this host's environment (pillar
    ``hpd:peers:<role>``, from the master's inventory). Each one's address is
    the inventory's (pillar ``hpd:addresses``), else where its name resolves on
    this host (DNS or /etc/hosts), never what the host says of itself (its
    grains, the mine). A member with no address (a name that no longer
    resolves) keeps its address in the last pool haproxy was given (the JSON
    file ``known_file``, which the lb role writes); a member with neither is
    left out and logged; an error when that leaves out every member.

    CLI Example:

    .. code-block:: bash

        salt lb hpd_edge.app_pool /var/lib/hpd/lb/pool.json
    """
    hpd = __pillar__.get("hpd") or {}
    peers = (hpd.get("peers") or {}).get(role) or []
    found = _found(peers, hpd.get("addresses") or {}, role)
    pool, missing = _app_pool(peers, found, _read_known(known_file))
    if missing:
        log.warning("hpd_edge: no address for %s (not in the inventory, not resolved, nor in "
                    "%s)", ", ".join(missing), known_file)
    if peers and not pool:
        raise CommandExecutionError(
            f"hpd:peers:{role}: no address for any of {', '.join(sorted(peers))}: the inventory "
            f"gives none, the names do not resolve and no pool is known yet ({known_file})"
        )
    return pool


def _regex_alternatives(items, escape=True):
    return "|".join(re.escape(i) if escape else i for i in items)


def _acl_entry(entry):
    address, _, bits = entry.partition("/")
    return f'"{address}"/{bits}' if bits else f'"{address}"'


def _redirect(rule):
    """A redirect rule (an item of pillar varnish:redirects) as VCL expressions."""
    path = rule.get("path", "/")
    prefix = f"^{re.escape(path)}"
    conditions = []
    if rule.get("host"):
        conditions.append(f'req.http.host == "{rule["host"]}"')
    if path != "/":
        conditions.append(f'req.url ~ "{prefix}"')
    if not rule.get("keep_path", True):
        location = f'"{rule["location"]}"'
    elif path == "/":
        # req.url starts with its own "/".
        location = f'"{rule["location"].rstrip("/")}" + req.url'
    else:
        location = f'"{rule["location"]}" + regsub(req.url, "{prefix}", "")'
    return {
        "condition": " && ".join(conditions) or "true",
        "location": location,
        "status": rule.get("status", 301),
    }


def _drop(exts, static_prefix):
    if not exts:
        return None
    # The site's own static files (when uWSGI serves them) are not dropped.
    outside = f"(?!{re.escape(static_prefix)})" if static_prefix else ""
    return f"(?i)^{outside}[^?]*\\.({_regex_alternatives(exts)})(\\?|$)"


def _vcl(varnish, static_prefix=None):
    """Pure computation behind :func:`vcl`."""
    exts = varnish["drop_extensions"]
    cookies = varnish["pass_cookies"]
    paths = varnish["pass_paths"]
    bypass = varnish["bypass_parameter"]
    return {
        "acl": [_acl_entry(e) for e in varnish["purge_acl"]],
        "drop": _drop(exts, static_prefix),
        "pass_cookie": f"(^|;\\s*)({_regex_alternatives(cookies)})=" if cookies else None,
        "pass_path": f"^({_regex_alternatives(paths)})" if paths else None,
        "bypass": f"[?&]{re.escape(bypass)}(=|&|$)" if bypass else None,
        "redirects": [_redirect(r) for r in varnish["redirects"]],
    }


def vcl(settings, static_url=None):
    """
    What the VCL template writes from the varnish role's settings (pillar
    ``varnish`` with its defaults, as ``hpd.settings`` returns it):

    ``acl``
        the ``purge`` ACL's entries.
    ``drop``, ``pass_cookie``, ``pass_path``, ``bypass``
        regular expressions for ``req.url`` / ``req.http.Cookie`` (None when
        their list is empty): a request for an extension the app never serves,
        a logged-in visitor's cookie, a path never cached, the cache-bypass
        query parameter. ``static_url`` (pillar site:static_url): when it is a
        path, the app serves its static files there, and they are not dropped.
    ``redirects``
        ``condition``, ``location`` (VCL expressions) and ``status`` of each
        redirect, in order.

    salt/varnish/map.jinja calls it with ``hpd.settings('varnish')``.
    """
    prefix = static_url if static_url and static_url.startswith("/") else None
    return _vcl(settings, prefix)


def error_page(app_root=None):
    """
    The site's error page in the release ``<app_root>/current`` points to (what
    salt/site/static.sls renders there with the site's
    ``generate_500_html``), or None where there is none: the mine function
    ``hpd_error_page`` every host publishes. ``app_root``: pillar
    common:app_root by default.

    CLI Example:

    .. code-block:: bash

        salt app1 hpd_edge.error_page
    """
    root = app_root or __salt__["hpd.settings"]("common")["app_root"]
    try:
        with open(os.path.join(root, "current", ERROR_PAGE), encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return None


def _first_page(peers, mined):
    """The page of the first peer (by name) that published one, or None."""
    for peer in sorted(peers):
        page = mined.get(peer)
        if isinstance(page, str) and page.strip():
            return page
    return None


def site_error_page(wait=0, role="app", interval=5):
    """
    The site's error page as the app hosts of this host's environment publish
    it to the mine (``hpd_error_page``; the first host by name that has one),
    or None. With none published yet (a farm's first highstate, while the app
    hosts build their first release), ask again every ``interval`` seconds for
    up to ``wait`` seconds, and no longer once every app host has published
    False (its first release failed: salt/site/release.sls): none will come.

    CLI Example:

    .. code-block:: bash

        salt lb hpd_edge.site_error_page
    """
    peers = ((__pillar__.get("hpd") or {}).get("peers") or {}).get(role) or []
    if not peers:
        return None
    deadline = time.monotonic() + float(wait)
    while True:
        mined = __salt__["mine.get"](peers, ERROR_PAGE_FUNCTION, tgt_type="list") or {}
        page = _first_page(peers, mined)
        failed = all(mined.get(peer) is False for peer in peers)
        if page is not None or failed or time.monotonic() >= deadline:
            if page is None:
                log.warning("hpd_edge: no app host (%s) published the site's error page (%s)%s",
                            ", ".join(sorted(peers)), ERROR_PAGE_FUNCTION,
                            ": their first release failed" if failed else "")
            return page
        time.sleep(interval)
