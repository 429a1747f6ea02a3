{#- git checks releases out; python3-venv makes their virtualenvs. #}
site-package-installed:
  pkg.installed:
    - pkgs: [git, python3-venv]
