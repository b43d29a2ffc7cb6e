"""paramiko (the SSH client of Fabric and Ansible's paramiko transport)
against the jump host, for tests/tests/ssh_totp.rs. Prints one JSON line.

  paramiko_jump.py login HOST PORT USER KEY CODE TARGET_HOST TARGET_PORT
      the key, then keyboard-interactive answered with CODE, then a
      direct-tcpip channel to TARGET (its first line: the target's banner)
  paramiko_jump.py bogus-service HOST PORT
      a service request the server does not offer: how, and how fast, the
      server answers (it must say so, never stay silent)

Every wait is bounded: connection, banner and authentication 10 s each.
"""
import json
import sys
import time

import paramiko

LIMIT = 10


def transport(host, port):
    t = paramiko.Transport((host, int(port)))
    t.banner_timeout = LIMIT
    t.auth_timeout = LIMIT
    t.start_client(timeout=LIMIT)
    return t


def login(host, port, user, key_file, code, target_host, target_port):
    result = {}
    t = transport(host, port)
    key = paramiko.PKey.from_path(key_file)
    try:
        result["publickey"] = t.auth_publickey(user, key)
    except paramiko.AuthenticationException as err:
        result["publickey_error"] = str(err)
    prompts = []

    def answer(title, instructions, asked):
        prompts.extend(p for p, _ in asked)
        return [code for _ in asked]

    started = time.monotonic()
    try:
        result["interactive"] = t.auth_interactive(user, answer)
    except Exception as err:  # what paramiko raises is the finding
        result["interactive_error"] = f"{type(err).__name__}: {err}"
    result["interactive_seconds"] = round(time.monotonic() - started, 2)
    result["prompts"] = prompts
    result["authenticated"] = t.is_authenticated()
    if t.is_authenticated():
        channel = t.open_channel(
            "direct-tcpip", (target_host, int(target_port)), ("127.0.0.1", 0), timeout=LIMIT
        )
        channel.settimeout(LIMIT)
        result["banner"] = channel.recv(256).decode(errors="replace").splitlines()[0]
        channel.close()
    t.close()
    return result


def bogus_service(host, port):
    t = transport(host, port)
    message = paramiko.Message()
    message.add_byte(bytes([5]))  # SSH_MSG_SERVICE_REQUEST
    message.add_string("gatehouse-no-such-service")
    started = time.monotonic()
    t._send_message(message)
    while t.is_active() and time.monotonic() - started < LIMIT:
        time.sleep(0.02)
    result = {
        "closed": not t.is_active(),
        "seconds": round(time.monotonic() - started, 2),
    }
    t.close()
    return result


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "login":
        out = login(*args)
    else:
        out = bogus_service(*args)
    print(json.dumps(out), flush=True)
