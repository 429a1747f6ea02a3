"""
A release's virtualenv, shared by every release with the same requirements.

Salt's ``virtualenv.managed`` and ``pip.installed`` make one virtualenv per path
and run pip on every call; a release step must instead reuse the virtualenv of
an earlier release when requirements.txt did not change (a deploy without new
dependencies installs nothing). So the virtualenv lives under a key made from
the requirements' hash and the Python version (``hpd_site.venv_key``), is built
once with Salt's ``virtualenv.create`` and ``pip.install`` (only from the local
wheelhouse, and only a lock: ``--require-hashes``, so every package, the ones
requirements.txt's packages need included, must be pinned with the hash of its
file), marked complete, and the release gets a symlink to it.
"""

import os
import shutil

__virtualname__ = "hpd_site"

#: Written last into a virtualenv: its packages are all installed.
COMPLETE = ".hpd-complete"
#: pip's last lines in a failed install's comment: its error, not its progress.
PIP_LINES = 10


def __virtual__():
    return __virtualname__


def _link(target, name):
    """Point the symlink ``name`` at ``target`` in one rename."""
    tmp = f"{name}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, name)


def venv_linked(name, requirements, venvs, find_links, user, python="/usr/bin/python3"):
    """
    The symlink ``name`` (a release's ``venv``) points to a complete virtualenv
    under ``venvs`` for ``requirements`` (the release's requirements.txt, a lock
    with hashes), installed by ``user`` from ``find_links`` only (``--no-index``,
    ``--require-hashes``).

    .. code-block:: yaml

        site-release-venv-linked:
          hpd_site.venv_linked:
            - name: /srv/hpd/releases/0123456789ab/venv
            - requirements: /srv/hpd/releases/0123456789ab/requirements.txt
            - venvs: /srv/hpd/venvs
            - find_links: /var/cache/hpd/wheelhouse
            - user: hpd
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    try:
        with open(requirements, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        ret.update(result=False, comment=f"cannot read {requirements}: {exc.strerror}")
        return ret
    interpreter = os.path.basename(os.path.realpath(python))
    venv = os.path.join(venvs, __salt__["hpd_site.venv_key"](text, interpreter))
    build = not os.path.exists(os.path.join(venv, COMPLETE))
    relink = os.path.realpath(name) != os.path.realpath(venv) or not os.path.islink(name)
    if build:
        ret["changes"]["venv"] = f"built {venv}"
    if relink:
        ret["changes"]["link"] = f"{name} -> {venv}"
    if not ret["changes"]:
        ret["comment"] = f"{name} -> {venv}, complete"
        return ret
    if __opts__["test"]:
        ret.update(result=None, comment="would have: " + "; ".join(ret["changes"].values()))
        return ret
    if build:
        # A virtualenv left incomplete (an install cut short) is built again from nothing.
        shutil.rmtree(venv, ignore_errors=True)
        created = __salt__["virtualenv.create"](venv, venv_bin=python, user=user)
        if created["retcode"] != 0:
            ret.update(result=False, changes={},
                       comment=f"virtualenv {venv} failed: {created['stderr'].strip()}")
            return ret
        installed = __salt__["pip.install"](requirements=requirements, bin_env=venv,
                                            no_index=True, find_links=find_links, user=user,
                                            disable_version_check=True,
                                            extra_args=["--require-hashes"])
        if installed["retcode"] != 0:
            said = (installed["stderr"] or installed["stdout"]).strip().splitlines()
            shutil.rmtree(venv, ignore_errors=True)
            ret.update(result=False, changes={},
                       comment=f"pip install -r {requirements} failed: "
                               + "\n".join(said[-PIP_LINES:]))
            return ret
        with open(os.path.join(venv, COMPLETE), "w", encoding="utf-8") as fh:
            fh.write(text)
    if relink:
        _link(venv, name)
    ret["comment"] = "; ".join(ret["changes"].values())
    return ret
