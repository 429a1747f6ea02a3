{%- from tpldir ~ "/map.jinja" import ssh with context %}

include:
  - .package

{#- The admins pillar names: each a user with a shell, exactly the keys pillar
    gives in ~/.ssh/authorized_keys, and a member of the admin group. The
    group's members are exactly pillar's admins: someone taken out of pillar
    loses SSH (AllowGroups) and sudo at once; the account stays. #}
{%- for name, admin in ssh.admins | dictsort %}

ssh-admin-{{ name }}-user-present:
  user.present:
    - name: {{ name }}
    - shell: /bin/bash
    - home: /home/{{ name }}
    - createhome: True

ssh-admin-{{ name }}-keys-managed:
  ssh_auth.manage:
    - name: {{ name }}
    - user: {{ name }}
    - ssh_keys: {{ admin['keys'] | json }}
    - require:
      - user: ssh-admin-{{ name }}-user-present
{%- endfor %}

ssh-admin-group-present:
  group.present:
    - name: {{ ssh.admin_group }}
    - members: {{ ssh.admins | sort | json }}
{%- if ssh.admins %}
    - require:
{%-   for name in ssh.admins | sort %}
      - user: ssh-admin-{{ name }}-user-present
{%-   endfor %}
{%- endif %}

{#- Admins log in with keys only and have no password: sudo asks for none.
    visudo checks the file before it replaces the old one (a broken sudoers
    file would take sudo away from everyone). #}
ssh-admin-sudoers-managed:
  file.managed:
    - name: /etc/sudoers.d/hpd-admins
    - contents: |
        # Managed by Salt (salt/ssh, pillar ssh:admin_group).
        %{{ ssh.admin_group }} ALL=(ALL:ALL) NOPASSWD: ALL
    - user: root
    - group: root
    - mode: '0440'
    - check_cmd: /usr/sbin/visudo -c -f
    - require:
      - pkg: ssh-server-package-installed
      - group: ssh-admin-group-present
