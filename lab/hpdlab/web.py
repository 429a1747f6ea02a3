"""Requests to the lab's site from the machine, as a visitor sends them: straight
to a lab host's address (never through a proxy the environment names), with the
site's domain as Host, TLS unverified (the lab's certificate is self-signed)."""

import http.client
import re
import ssl
import urllib.parse

DOMAIN = "www.hpd.test"  # pillar site:domains in dev (pillar/environments/dev.sls)


def fetch(address, path="/", host=DOMAIN, method="GET", headers=None, body=None, tls=True,
          port=None):
    """One request to `address`: (status, headers with lower-case names, body text)."""
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection(address, port or 443, timeout=30, context=context)
    else:
        conn = http.client.HTTPConnection(address, port or 80, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                response.read().decode(errors="replace"))
    finally:
        conn.close()


def login(address, username, password, host=DOMAIN):
    """Log in through the site's form (Django's auth, CSRF token and all); the
    session cookie's value."""
    status, headers, page = fetch(address, "/accounts/login/", host=host)
    if status != 200:
        raise RuntimeError(f"GET /accounts/login/ answered {status}")
    csrf = re.search(r"csrftoken=([^;]+)", headers.get("set-cookie", "")).group(1)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"username": username, "password": password,
                                   "csrfmiddlewaretoken": token})
    status, headers, _ = fetch(address, "/accounts/login/", host=host, method="POST", body=form,
                               headers={"Cookie": f"csrftoken={csrf}",
                                        "Referer": f"https://{host}/accounts/login/",
                                        "Content-Type": "application/x-www-form-urlencoded"})
    session = re.search(r"sessionid=([^;]+)", headers.get("set-cookie", ""))
    if status != 302 or not session:
        raise RuntimeError(f"the login of {username} failed ({status})")
    return session.group(1)
